// Package keys keeps sandpool's API keys: it makes them, stores only their
// SHA-256, authenticates a request's key (with a short cache), lists and
// revokes them. Each key belongs to one tenant; admin keys may also manage
// keys, templates and nodes.
package keys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/store"
)

// Store is what keys need of the store.
type Store interface {
	CreateKey(ctx context.Context, k store.Key) error
	KeyByHash(ctx context.Context, hash string) (store.Key, error)
	ListKeys(ctx context.Context) ([]store.Key, error)
	RevokeKey(ctx context.Context, id string) error
}

// Key is a key as callers see it; Secret is set only when it is made.
type Key struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Secret    string     `json:"key,omitempty"`
}

func fromRecord(k store.Key) Key {
	out := Key{ID: k.ID, Tenant: k.Tenant, Admin: k.Admin, CreatedAt: k.CreatedAt}
	if !k.RevokedAt.IsZero() {
		t := k.RevokedAt
		out.RevokedAt = &t
	}
	return out
}

// Form is how a new key's secret looks.
type Form int

const (
	// Native keys are "spk_" and 32 base32 characters (160 random bits).
	Native Form = iota
	// E2B keys are "e2b_" and 40 lower-case hex digits (160 random bits):
	// the form the E2B SDKs check before they send a key.
	E2B
)

var nativeEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewSecret makes a key's secret and its record, without storing it.
func NewSecret(tenant string, admin bool, form Form) (string, store.Key) {
	var b [20]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	secret := "spk_" + nativeEncoding.EncodeToString(b[:])
	if form == E2B {
		secret = "e2b_" + hex.EncodeToString(b[:])
	}
	return secret, store.Key{ID: "key_" + ids.Suffix(), Tenant: tenant, Hash: Hash(secret), Admin: admin, CreatedAt: time.Now().UTC()}
}

// Hash is how keys are stored and looked up.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

var tenantName = pattern.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)

// ErrUnknown: the key is unknown or revoked.
var ErrUnknown = errors.New("unknown or revoked API key")

// cacheTTL bounds how long a valid key is trusted without asking the
// store: a key revoked on this node stops working at once, on another node
// within this time.
const cacheTTL = 2 * time.Second

// Keys manages API keys. Safe for concurrent use.
type Keys struct {
	st Store

	mu    sync.Mutex
	cache map[string]cached // valid keys by hash; unknown ones are always looked up
}

type cached struct {
	k       Key
	expires time.Time
}

// New returns the keys kept in st.
func New(st Store) *Keys { return &Keys{st: st} }

// Create makes a key for tenant and returns it with its secret, which is
// never shown again.
func (ks *Keys) Create(ctx context.Context, tenant string, admin bool, form Form) (Key, error) {
	if !tenantName.MatchString(tenant) {
		return Key{}, errdefs.Userf(errdefs.ErrInvalid, "invalid tenant %q: use a-z, 0-9, '.', '_' and '-', at most 63", tenant)
	}
	secret, rec := NewSecret(tenant, admin, form)
	if err := ks.st.CreateKey(ctx, rec); err != nil {
		return Key{}, err
	}
	k := fromRecord(rec)
	k.Secret = secret
	return k, nil
}

// Authenticate finds the valid key whose secret this is; ErrUnknown if
// there is none.
func (ks *Keys) Authenticate(ctx context.Context, secret string) (Key, error) {
	hash := Hash(secret)
	now := time.Now()
	ks.mu.Lock()
	c, ok := ks.cache[hash]
	ks.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.k, nil
	}
	rec, err := ks.st.KeyByHash(ctx, hash)
	if errors.Is(err, errdefs.ErrNotFound) {
		return Key{}, ErrUnknown
	}
	if err != nil {
		return Key{}, err
	}
	k := fromRecord(rec)
	ks.mu.Lock()
	if ks.cache == nil || len(ks.cache) > 10000 {
		ks.cache = map[string]cached{} // bounded: start over rather than grow
	}
	ks.cache[hash] = cached{k: k, expires: now.Add(cacheTTL)}
	ks.mu.Unlock()
	return k, nil
}

// List returns every key, revoked ones included.
func (ks *Keys) List(ctx context.Context) ([]Key, error) {
	recs, err := ks.st.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(recs))
	for _, r := range recs {
		out = append(out, fromRecord(r))
	}
	return out, nil
}

// Revoke revokes key id; by is the key asking (a key cannot revoke
// itself).
func (ks *Keys) Revoke(ctx context.Context, id, by string) error {
	if id == by {
		return errdefs.Userf(errdefs.ErrConflict, "a key cannot revoke itself")
	}
	defer func() { // whatever happened, trust nothing cached
		ks.mu.Lock()
		ks.cache = nil
		ks.mu.Unlock()
	}()
	if err := ks.st.RevokeKey(ctx, id); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return errdefs.Userf(errdefs.ErrNotFound, "no valid key %q", id)
		}
		return err
	}
	return nil
}

// EnsureAdmin makes an admin key if there is no key at all, and returns
// its secret ("" if keys existed). write is called with the secret before
// the key is stored, so a key is never stored that nobody can read.
func (ks *Keys) EnsureAdmin(ctx context.Context, write func(secret string) error) (string, error) {
	list, err := ks.st.ListKeys(ctx)
	if err != nil || len(list) > 0 {
		return "", err
	}
	secret, rec := NewSecret("admin", true, Native)
	if err := write(secret); err != nil {
		return "", err
	}
	return secret, ks.st.CreateKey(ctx, rec)
}
