package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/store"
)

// An API key is "spk_" and 32 base32 characters (160 random bits). Only
// its SHA-256 is stored.

var keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewKey makes a key secret and its record (without storing it).
func NewKey(tenant string, admin bool) (secret string, rec store.Key) {
	var b [20]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	secret = "spk_" + keyEncoding.EncodeToString(b[:])
	return secret, store.Key{ID: "key_" + ids.Suffix(), Tenant: tenant, Hash: HashKey(secret),
		Admin: admin, CreatedAt: time.Now().UTC()}
}

// HashKey is how keys are stored and looked up.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

var tenantName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// principal is who made a request.
type principal struct {
	KeyID  string
	Tenant string
	Admin  bool
	// Cluster: another sandpool node, acting for Tenant.
	Cluster bool
}

type principalKey struct{}

func who(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal) // set by authenticated
	return p
}

func (s *Server) authenticated(h http.HandlerFunc, admin bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || secret == "" {
			s.writeError(w, r, fmt.Errorf("%w: send an API key as Authorization: Bearer <key>", errUnauthorized))
			return
		}
		if p, ok := s.clusterPrincipal(r, strings.TrimSpace(secret)); ok {
			h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
			return
		}
		k, err := s.keys.lookup(r.Context(), s.st, HashKey(strings.TrimSpace(secret)))
		if errors.Is(err, errdefs.ErrNotFound) {
			s.writeError(w, r, fmt.Errorf("%w: unknown or revoked API key", errUnauthorized))
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if admin && !k.Admin {
			s.writeError(w, r, fmt.Errorf("%w: this needs an admin key", errForbidden))
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, principal{KeyID: k.ID, Tenant: k.Tenant, Admin: k.Admin})
		h(w, r.WithContext(ctx))
	}
}

// keyCacheTTL bounds how long a valid key is trusted without asking the
// store: a key revoked on this node stops working at once, on another
// node within this time.
const keyCacheTTL = 2 * time.Second

// keyCache remembers valid keys by hash (unknown ones are always looked up).
type keyCache struct {
	mu sync.Mutex
	m  map[string]cachedKey
}

type cachedKey struct {
	k       store.Key
	expires time.Time
}

func (c *keyCache) lookup(ctx context.Context, st Store, hash string) (store.Key, error) {
	now := time.Now()
	c.mu.Lock()
	ck, ok := c.m[hash]
	c.mu.Unlock()
	if ok && now.Before(ck.expires) {
		return ck.k, nil
	}
	k, err := st.KeyByHash(ctx, hash)
	if err != nil {
		return k, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 10000 {
		c.m = map[string]cachedKey{} // bounded: start over rather than grow
	}
	c.m[hash] = cachedKey{k: k, expires: now.Add(keyCacheTTL)}
	c.mu.Unlock()
	return k, nil
}

func (c *keyCache) forget() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

// KeyInfo is a key as the API shows it; Key (the secret) only at creation.
type KeyInfo struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Key       string     `json:"key,omitempty"`
}

func keyInfo(k store.Key) KeyInfo {
	ki := KeyInfo{ID: k.ID, Tenant: k.Tenant, Admin: k.Admin, CreatedAt: k.CreatedAt}
	if !k.RevokedAt.IsZero() {
		t := k.RevokedAt
		ki.RevokedAt = &t
	}
	return ki
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tenant string `json:"tenant"`
		Admin  bool   `json:"admin"`
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !tenantName.MatchString(req.Tenant) {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "invalid tenant %q: use a-z, 0-9, '.', '_' and '-', at most 63", req.Tenant))
		return
	}
	secret, rec := NewKey(req.Tenant, req.Admin)
	if err := s.st.CreateKey(r.Context(), rec); err != nil {
		s.writeError(w, r, err)
		return
	}
	ki := keyInfo(rec)
	ki.Key = secret
	writeJSON(w, http.StatusCreated, ki)
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.st.ListKeys(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]KeyInfo, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyInfo(k))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == who(r).KeyID {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrConflict, "a key cannot revoke itself"))
		return
	}
	defer s.keys.forget()
	if err := s.st.RevokeKey(r.Context(), id); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = errdefs.Userf(errdefs.ErrNotFound, "no valid key %q", id)
		}
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
