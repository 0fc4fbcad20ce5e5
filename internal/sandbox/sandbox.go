package sandbox

import (
	"encoding/json"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// Status is a sandbox's place in its lifecycle.
type Status string

// allStatuses lists every status.
var allStatuses = []Status{StatusCreating, StatusReady, StatusRunning, StatusResetting, StatusPaused,
	StatusStopping, StatusStopped, StatusFailed, StatusLost}

// Active lists the statuses of sandboxes that exist in a runtime.
var Active = []Status{StatusCreating, StatusReady, StatusRunning, StatusResetting, StatusPaused, StatusStopping}

var (
	// ErrCapacity: the node runs as many sandboxes as it may.
	ErrCapacity = errdefs.New(errdefs.ErrExhausted, "at_capacity", "at capacity")
	// ErrShuttingDown: the service is stopping.
	ErrShuttingDown = errdefs.New(errdefs.ErrUnavailable, "shutting_down", "shutting down")
	// ErrElsewhere: the sandbox lives on another node (a request reached
	// this one without being forwarded; retry).
	ErrElsewhere = errdefs.New(errdefs.ErrUnavailable, "node_unavailable", "on another node")
)

// Limits bound what a sandbox may use; zero fields take the backend's
// defaults. (The runtime's type: callers above the service need not know
// the runtime.)
type Limits = runtime.Limits

// Network is a sandbox's egress policy: {"egress": "none" | "open" |
// "allowlist", "allow": [...], "deny": [...]} (the runtime's type).
type Network = runtime.Network

// NetworkStats count a sandbox's traffic out (the runtime's type).
type NetworkStats = runtime.NetworkStats

// Sandbox is what callers see of a sandbox.
type Sandbox struct {
	ID       string            `json:"id"`
	Tenant   string            `json:"-"`
	Template string            `json:"template"`
	Status   Status            `json:"status"`
	Limits   Limits            `json:"limits"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Network is its egress policy now.
	Network Network `json:"network"`
	// Timeout is seconds of inactivity before OnTimeout ("pause" or
	// "kill"); 0 means never. ArchiveAfter is seconds a paused sandbox
	// stays frozen before it is archived.
	Timeout      int    `json:"timeout"`
	OnTimeout    string `json:"on_timeout"`
	ArchiveAfter int    `json:"archive_after"`
	// AutoResume: calls on the sandbox while it is paused resume it first
	// (true unless it was made with auto_resume false).
	AutoResume bool `json:"auto_resume"`
	// Pool is the pool the sandbox belongs to, if any; Uses counts its
	// sessions.
	Pool      string    `json:"pool,omitempty"`
	Uses      int       `json:"uses,omitempty"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// TimesOutAt is when the sandbox will be paused (or killed) if
	// nothing happens; absent while a process stream is open.
	TimesOutAt *time.Time `json:"times_out_at,omitempty"`
	// LastActivity is the last API call, ping or end of a stream.
	LastActivity *time.Time `json:"last_activity,omitempty"`
	// PausedAt, Archived and TimeoutLeft describe a paused sandbox: since
	// when, whether its processes were stopped (files kept), and the
	// inactivity timeout it will have again when resumed.
	PausedAt    *time.Time `json:"paused_at,omitempty"`
	Archived    bool       `json:"archived,omitempty"`
	TimeoutLeft *float64   `json:"timeout_left,omitempty"`

	// NodeName is the node the sandbox lives on.
	NodeName string `json:"node"`
}

// Node is the node the sandbox lives on.
func (sb Sandbox) Node() string { return sb.NodeName }

// CreateRequest is what a caller asks for.
type CreateRequest struct {
	Template string            `json:"template"`
	Limits   Limits            `json:"limits"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Network is the sandbox's egress policy; nil means the server's
	// default (Config.DefaultNetwork).
	Network *Network `json:"network,omitempty"`
	// Timeout is seconds of inactivity before OnTimeout: "pause" (the
	// default) or "kill"; 0 means never. ArchiveAfter is seconds a paused
	// sandbox stays frozen before its processes are stopped to free
	// memory (0: the server's default).
	Timeout      int    `json:"timeout,omitempty"`
	OnTimeout    string `json:"on_timeout,omitempty"`
	ArchiveAfter int    `json:"archive_after,omitempty"`
	// AutoResume false makes calls on the sandbox while it is paused fail
	// (409) instead of resuming it; an explicit resume still works.
	// Default true.
	AutoResume *bool `json:"auto_resume,omitempty"`
	// Pool, if set, acquires a sandbox from that pool instead (handled by
	// the pool manager; Template and Limits then come from the pool).
	Pool string `json:"pool,omitempty"`
}

// spec is what the store keeps of a create request.
type spec struct {
	Limits runtime.Limits    `json:"limits"`
	Env    map[string]string `json:"env,omitempty"`
	// Rootfs is the runtime template the files come from (the template
	// itself, or the one a defined template is based on).
	Rootfs string `json:"rootfs,omitempty"`
	// NoAutoResume: calls do not resume the sandbox when it is paused.
	NoAutoResume bool `json:"no_auto_resume,omitempty"`
	// SessionEnv is what a pool's session added to Env (SetSession); it
	// goes when the sandbox is released.
	SessionEnv map[string]string `json:"session_env,omitempty"`
	// Network is the egress policy in force; PoolNetwork, for a pool's
	// sandbox, the one each reset returns it to (a session may change
	// it). A row from before networks has neither: egress none.
	Network     *Network `json:"network,omitempty"`
	PoolNetwork *Network `json:"pool_network,omitempty"`
}

// specOf reads what the store keeps of a sandbox's create request.
func specOf(row store.Sandbox) spec {
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us; an old row shows empty limits
	return sp
}

// Validate checks what the runtime does not.
func (r CreateRequest) Validate() error {
	if r.Template == "" && r.Pool == "" {
		return errdefs.Userf(errdefs.ErrInvalid, "template is required")
	}
	if err := checkTimeout(r.Timeout, r.OnTimeout, r.ArchiveAfter); err != nil {
		return err
	}
	if len(r.Metadata) > 64 || len(r.Env) > 256 {
		return errdefs.Userf(errdefs.ErrInvalid, "at most 64 metadata entries and 256 environment variables")
	}
	if err := proc.CheckEnv(r.Env); err != nil {
		return err
	}
	for k, v := range r.Metadata {
		if k == "" || len(k) > 128 || len(v) > 1024 {
			return errdefs.Userf(errdefs.ErrInvalid, "metadata %q: keys 1-128 bytes, values up to 1024", k)
		}
	}
	return nil
}

func statusStrings(ss []Status) []string {
	out := make([]string, len(ss))
	for i, st := range ss {
		out[i] = string(st)
	}
	return out
}

// fromRow turns a store row into what callers see.
func (s *Service) fromRow(row store.Sandbox) Sandbox {
	sp := specOf(row)
	sb := Sandbox{ID: row.ID, Tenant: row.Tenant, Template: row.Template, Status: Status(row.Status),
		Limits: sp.Limits, Env: sp.env(), Metadata: row.Metadata, Error: row.Error, AutoResume: !sp.NoAutoResume,
		Network: sp.network(),
		Timeout: row.Timeout, OnTimeout: row.OnTimeout, ArchiveAfter: s.archiveAfter(row),
		Pool: row.Pool, Uses: row.Uses, NodeName: row.Node,
		CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt}
	if !row.LastActive.IsZero() {
		t := row.LastActive
		sb.LastActivity = &t
	}
	switch sb.Status {
	case StatusRunning:
		s.mu.Lock()
		if a := s.activity[row.ID]; a != nil {
			last := a.last.UTC()
			sb.LastActivity = &last
			if a.timeout > 0 && s.streams[row.ID] == 0 {
				t := a.last.Add(a.timeout).UTC()
				sb.TimesOutAt = &t
			}
		}
		s.mu.Unlock()
	case StatusPaused:
		t := row.PausedAt
		sb.PausedAt = &t
		sb.Archived = row.Archived
		if row.Timeout > 0 {
			left := row.TimeoutLeft.Seconds()
			if left <= 0 {
				left = float64(row.Timeout)
			}
			sb.TimeoutLeft = &left
		}
	}
	return sb
}
