// Package store keeps sandpool's books: sandboxes and their status, API
// keys, idempotency keys. Store is implemented by store/sqlite (the default)
// and, planned, store/postgres; both pass storetest.Run.
package store

import (
	"context"
	"embed"
	"errors"
	"time"
)

// Migrations are the versioned schema, shared by every store.
//
//go:embed migrations/*.sql
var Migrations embed.FS

var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	// ErrConflict: a conditional update found the row in another state.
	ErrConflict = errors.New("store: conflict")
)

// Sandbox is a sandbox's record.
type Sandbox struct {
	ID       string
	Tenant   string
	Template string
	Status   string
	// Spec is the create request as JSON (limits, env, timeout).
	Spec      string
	Metadata  map[string]string
	Error     string
	Node      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Filter selects sandboxes in List. Empty fields match everything.
type Filter struct {
	Tenant   string
	Statuses []string
	Node     string
}

// Key is an API key's record; only the hash of the secret is kept.
type Key struct {
	ID        string
	Tenant    string
	Hash      string
	Admin     bool
	CreatedAt time.Time
	RevokedAt time.Time // zero while valid
}

// Idempotency remembers which sandbox a create with an idempotency key made.
type Idempotency struct {
	Tenant    string
	Key       string
	BodyHash  string
	SandboxID string
	ExpiresAt time.Time
}

// Store is what the service needs from a database. All methods are safe
// for concurrent use.
type Store interface {
	CreateSandbox(ctx context.Context, sb Sandbox) error
	GetSandbox(ctx context.Context, id string) (Sandbox, error)
	ListSandboxes(ctx context.Context, f Filter) ([]Sandbox, error)
	// SetStatus moves a sandbox to status if it is in one of from (any
	// status if from is empty), recording errMsg. ErrConflict otherwise.
	SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error
	DeleteSandbox(ctx context.Context, id string) error

	CreateKey(ctx context.Context, k Key) error
	// KeyByHash finds a key that is not revoked.
	KeyByHash(ctx context.Context, hash string) (Key, error)
	ListKeys(ctx context.Context) ([]Key, error)
	RevokeKey(ctx context.Context, id string) error

	// PutIdempotency records idem unless a live record exists for the same
	// tenant and key; then it returns that one and ErrExists. Expired
	// records are dropped.
	PutIdempotency(ctx context.Context, idem Idempotency) (Idempotency, error)

	Close() error
}
