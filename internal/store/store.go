// Package store keeps sandpool's books: sandboxes and their status, pools,
// templates, API keys, idempotency keys, nodes and leases. Store is
// implemented by store/sqlstore on SQLite (the default) and PostgreSQL;
// both pass storetest.Run.
package store

import (
	"context"
	"embed"
	"time"
)

// Migrations are the versioned schema, shared by every store.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Errors wrap the kinds of internal/errdefs: errdefs.ErrNotFound (no such
// row), errdefs.ErrExists (the key is taken) and errdefs.ErrConflict (a
// conditional update found the row in another state, or a fence failed).

// Sandbox is a sandbox's record.
type Sandbox struct {
	ID       string
	Tenant   string
	Template string
	Status   string
	// Spec is the create request as JSON (limits, env, timeout).
	Spec     string
	Metadata map[string]string
	Error    string
	Node     string
	// Pool names the pool the sandbox belongs to ("" for none); Uses
	// counts its sessions.
	Pool string
	Uses int
	// Timeout is seconds of inactivity before OnTimeout ("pause" or
	// "kill"); 0 means never. ArchiveAfter is seconds a paused sandbox
	// stays frozen before it is archived (0: the server's default).
	Timeout      int
	OnTimeout    string
	ArchiveAfter int
	// LastActive is the last activity persisted; PausedAt when it was
	// paused; TimeoutLeft the inactivity timeout it had left then;
	// Archived whether its processes were stopped (files kept).
	LastActive  time.Time
	PausedAt    time.Time
	TimeoutLeft time.Duration
	Archived    bool
	// GPUs are the indexes of its node's GPUs it holds ("0,2"; "" for
	// none), while it is active.
	GPUs string
	// Fence, on a create, makes it happen only while the lease is held.
	Fence     *Fence
	CreatedAt time.Time
	// UpdatedAt is the time of the last status change (for an idle
	// sandbox: since when it is idle).
	UpdatedAt time.Time
}

// Filter selects sandboxes in List. Empty fields match everything.
type Filter struct {
	Tenant   string
	Statuses []string
	Node     string
	Pool     string
}

// Update is a conditional change of a sandbox row; nil fields are kept.
type Update struct {
	Status       *string
	Error        *string
	Timeout      *int
	OnTimeout    *string
	ArchiveAfter *int
	PausedAt     *time.Time
	TimeoutLeft  *time.Duration
	Archived     *bool
	// Metadata replaces the sandbox's metadata; Spec its create request
	// (JSON). A pool's sandbox carries a session's own in them.
	Metadata *map[string]string
	Spec     *string
	// GPUs replaces the GPUs it holds.
	GPUs *string
	// Fence makes the update happen only while the lease is held.
	Fence *Fence
}

// Fence is what a write depends on, checked in the same statement: if
// Lease is set, that holder still holds the lease in term, unexpired (a
// deposed leader's late writes change nothing); if Pool is set, the pool
// exists and is not being deleted; if MaxInPool is set (creates only),
// the pool has fewer sandboxes in one of the Counted statuses than that.
type Fence struct {
	Lease     string
	Holder    string
	Term      int64
	Pool      string
	MaxInPool int
	Counted   []string
}

// Take is what TakeIdle takes: a sandbox of Pool (on Node, if set) in
// status From, moved to To with the session's inactivity timeout
// (seconds; 0: none) and what happens when it passes.
type Take struct {
	Pool, Node     string
	From, To       string
	SessionTimeout int
	OnTimeout      string
}

// Node is a sandpool node's record.
type Node struct {
	ID          string
	Address     string // where other nodes reach its API
	Capacity    int
	Status      string // "up" or "down"
	HeartbeatAt time.Time
	StartedAt   time.Time
	// Incarnation tells one process holding the name from another: each
	// `sandpool serve` picks a new one.
	Incarnation string
}

// Lease is a named lease: its holder, term (raised at each change of
// holder) and deadline.
type Lease struct {
	Name      string
	Holder    string
	Term      int64
	ExpiresAt time.Time
}

// Pool is a pool's record; Config is its settings as JSON.
type Pool struct {
	Name      string
	Tenant    string
	Config    string
	Status    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Template is a template defined on another one's files, with hooks
// (as JSON).
type Template struct {
	Name      string
	Base      string
	Hooks     string
	CreatedAt time.Time
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
	// CountSandboxes counts what ListSandboxes would list.
	CountSandboxes(ctx context.Context, f Filter) (int, error)
	// SetStatus moves a sandbox to status if it is in one of from (any
	// status if from is empty), recording errMsg. ErrConflict otherwise.
	SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error
	DeleteSandbox(ctx context.Context, id string) error
	// UpdateSandbox applies u if the sandbox is in one of from (any status
	// if from is empty); ErrConflict otherwise. A status change also sets
	// updated_at.
	UpdateSandbox(ctx context.Context, id string, from []string, u Update) error
	// TouchSandboxes records last activity times.
	TouchSandboxes(ctx context.Context, active map[string]time.Time) error
	// TakeIdle atomically moves the longest-idle sandbox of t.Pool (on
	// t.Node, if not empty) from status t.From to t.To, counts a use and
	// gives it t's inactivity timeout. ErrNotFound if there is none. Two
	// callers never get the same sandbox.
	TakeIdle(ctx context.Context, t Take) (Sandbox, error)
	// CountByStatus counts what ListSandboxes would list, by status.
	CountByStatus(ctx context.Context, f Filter) (map[string]int, error)

	// CreatePool fails with ErrExists if the name is taken.
	CreatePool(ctx context.Context, p Pool) error
	GetPool(ctx context.Context, name string) (Pool, error)
	ListPools(ctx context.Context) ([]Pool, error)
	// UpdatePool replaces a pool's config and status; a draining pool
	// stays draining (ErrConflict).
	UpdatePool(ctx context.Context, name, config, status string) error
	DeletePool(ctx context.Context, name string) error

	// CreateTemplate fails with ErrExists if the name is taken.
	// Heartbeat records that n is up, creating its record if needed. It
	// takes over a record held by another incarnation only if that one
	// is down or its last heartbeat is older than staleBefore; otherwise
	// it changes nothing and returns the holder and ErrConflict.
	Heartbeat(ctx context.Context, n Node, staleBefore time.Time) (Node, error)
	ListNodes(ctx context.Context) ([]Node, error)
	// MarkNodeLost, in one transaction, marks node down if it is up and
	// its last heartbeat is older than before, and moves its sandboxes in
	// one of the active statuses to status lost with errMsg. It returns
	// those, and true if this call did it (several nodes may try; one
	// does).
	MarkNodeLost(ctx context.Context, node string, before time.Time, active []string, lost, errMsg string) ([]Sandbox, bool, error)

	// ClusterSecret returns the secret nodes share, storing candidate if
	// there is none yet.
	ClusterSecret(ctx context.Context, candidate string) (string, error)

	// AcquireLease takes or renews the lease for holder until now+ttl if it
	// is free, expired or already holder's, and returns the lease as it now
	// is (held by someone else if it was not free).
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	// ReleaseLease gives up a lease holder holds in term.
	ReleaseLease(ctx context.Context, name, holder string, term int64) error

	CreateTemplate(ctx context.Context, t Template) error
	GetTemplate(ctx context.Context, name string) (Template, error)
	ListTemplates(ctx context.Context) ([]Template, error)
	DeleteTemplate(ctx context.Context, name string) error

	CreateKey(ctx context.Context, k Key) error
	// KeyByHash finds a key that is not revoked.
	KeyByHash(ctx context.Context, hash string) (Key, error)
	ListKeys(ctx context.Context) ([]Key, error)
	RevokeKey(ctx context.Context, id string) error

	// PutIdempotency records idem unless a live record exists for the same
	// tenant and key; then it returns that one and ErrExists. Expired
	// records are dropped.
	PutIdempotency(ctx context.Context, idem Idempotency) (Idempotency, error)
	// SetIdempotency points a key at another sandbox (a pool's, known only
	// once acquired); DeleteIdempotency forgets a key whose create failed.
	SetIdempotency(ctx context.Context, tenant, key, sandboxID string) error
	DeleteIdempotency(ctx context.Context, tenant, key string) error

	Close() error
}
