// Package idempotency remembers which sandbox a create with an
// Idempotency-Key made, so that a client's retry gets the same sandbox
// instead of a second one.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// TTL is how long a key is remembered.
const TTL = 24 * time.Hour

// MaxKey is the longest key accepted.
const MaxKey = 255

// Store is what idempotency needs of the store.
type Store interface {
	PutIdempotency(ctx context.Context, idem store.Idempotency) (store.Idempotency, error)
	SetIdempotency(ctx context.Context, tenant, key, sandboxID string) error
	DeleteIdempotency(ctx context.Context, tenant, key string) error
}

var (
	// ErrMismatch: the key was used before with another request body.
	ErrMismatch = errdefs.New(errdefs.ErrInvalid, "idempotency_mismatch", "idempotency key reused with a different request")
	// ErrInProgress: the first request with this key is still under way.
	ErrInProgress = errors.New("a create with this Idempotency-Key is under way; retry")
)

// Records are the remembered keys.
type Records struct{ st Store }

// New returns the records kept in st.
func New(st Store) *Records { return &Records{st: st} }

// Claim is a key taken by one create.
type Claim struct {
	r           *Records
	tenant, key string
	// SandboxID is the id the create must give its sandbox; Replay is set
	// instead when the key was used before with the same body: answer
	// with that sandbox.
	SandboxID string
	Replay    string
}

// Begin takes key for tenant's create with body, giving it newID, unless
// the key was used before: then Replay names the sandbox made the first
// time (ErrMismatch if the body differs).
func (r *Records) Begin(ctx context.Context, tenant, key string, body []byte, newID string) (Claim, error) {
	if len(key) > MaxKey {
		return Claim{}, errdefs.Userf(errdefs.ErrInvalid, "Idempotency-Key longer than %d bytes", MaxKey)
	}
	sum := sha256.Sum256(body)
	idem := store.Idempotency{Tenant: tenant, Key: key, BodyHash: hex.EncodeToString(sum[:]),
		SandboxID: newID, ExpiresAt: time.Now().Add(TTL)}
	got, err := r.st.PutIdempotency(ctx, idem)
	switch {
	case errors.Is(err, errdefs.ErrExists):
		if got.BodyHash != idem.BodyHash {
			return Claim{}, ErrMismatch
		}
		return Claim{r: r, tenant: tenant, key: key, Replay: got.SandboxID}, nil
	case err != nil:
		return Claim{}, fmt.Errorf("idempotency key: %w", err)
	}
	return Claim{r: r, tenant: tenant, key: key, SandboxID: newID}, nil
}

// Repoint makes the key name another sandbox (one acquired from a pool,
// known only once acquired). Best effort: a replay then finds nothing and
// makes anew.
func (c Claim) Repoint(ctx context.Context, sandboxID string) {
	_ = c.r.st.SetIdempotency(context.WithoutCancel(ctx), c.tenant, c.key, sandboxID) // best effort, as said
}

// Forget drops the key after a create that made nothing, so a retry makes
// anew. Best effort: otherwise the retry finds nothing and gets
// ErrInProgress until the key expires.
func (c Claim) Forget(ctx context.Context) {
	_ = c.r.st.DeleteIdempotency(context.WithoutCancel(ctx), c.tenant, c.key) // best effort, as said
}
