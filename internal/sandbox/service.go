// Package sandbox is the lifecycle service: it owns each sandbox's status,
// writes every transition to the store before acting on it, drives the
// runtime, publishes events, and tells the two kinds of failure apart — a
// sandbox state error retires the sandbox, a user error is returned and the
// sandbox lives on.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// Status is a sandbox's place in its lifecycle.
type Status string

const (
	StatusCreating  Status = "creating"
	StatusReady     Status = "ready"     // idle in a pool, its session set up
	StatusRunning   Status = "running"   // in use: created directly or acquired from a pool
	StatusResetting Status = "resetting" // released to its pool, being reset
	StatusPaused    Status = "paused"
	StatusStopping  Status = "stopping"
	StatusStopped   Status = "stopped"
	StatusFailed    Status = "failed"
	// StatusLost: its node stopped answering; what it had is gone.
	StatusLost Status = "lost"
)

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

// Sandbox is what callers see of a sandbox.
type Sandbox struct {
	ID       string            `json:"id"`
	Tenant   string            `json:"-"`
	Template string            `json:"template"`
	Status   Status            `json:"status"`
	Limits   Limits            `json:"limits"`
	Env      map[string]string `json:"env,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Timeout is seconds of inactivity before OnTimeout ("pause" or
	// "kill"); 0 means never. ArchiveAfter is seconds a paused sandbox
	// stays frozen before it is archived.
	Timeout      int    `json:"timeout"`
	OnTimeout    string `json:"on_timeout"`
	ArchiveAfter int    `json:"archive_after"`
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
	// Timeout is seconds of inactivity before OnTimeout: "pause" (the
	// default) or "kill"; 0 means never. ArchiveAfter is seconds a paused
	// sandbox stays frozen before its processes are stopped to free
	// memory (0: the server's default).
	Timeout      int    `json:"timeout,omitempty"`
	OnTimeout    string `json:"on_timeout,omitempty"`
	ArchiveAfter int    `json:"archive_after,omitempty"`
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
	for k, v := range r.Metadata {
		if k == "" || len(k) > 128 || len(v) > 1024 {
			return errdefs.Userf(errdefs.ErrInvalid, "metadata %q: keys 1-128 bytes, values up to 1024", k)
		}
	}
	return nil
}

// Store is what the service needs of the store.
type Store interface {
	CreateSandbox(ctx context.Context, sb store.Sandbox) error
	GetSandbox(ctx context.Context, id string) (store.Sandbox, error)
	ListSandboxes(ctx context.Context, f store.Filter) ([]store.Sandbox, error)
	CountSandboxes(ctx context.Context, f store.Filter) (int, error)
	SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error
	UpdateSandbox(ctx context.Context, id string, from []string, u store.Update) error
	TouchSandboxes(ctx context.Context, active map[string]time.Time) error
	TakeIdle(ctx context.Context, t store.Take) (store.Sandbox, error)
	CountPool(ctx context.Context, pool string, statuses []string) (map[string]int, error)
	MarkNodeLost(ctx context.Context, node string, before time.Time, active []string, lost, errMsg string) ([]store.Sandbox, bool, error)

	CreateTemplate(ctx context.Context, t store.Template) error
	GetTemplate(ctx context.Context, name string) (store.Template, error)
	ListTemplates(ctx context.Context) ([]store.Template, error)
	DeleteTemplate(ctx context.Context, name string) error
}

// Config configures a Service.
type Config struct {
	// Node names this process in the store; sandboxes belong to the node
	// that started them.
	Node string
	// MaxSandboxes caps active sandboxes on this node; 0 means 1000.
	MaxSandboxes int
	// ReapInterval is how often idle sandboxes are looked for; 0 means 1s.
	ReapInterval time.Duration
	// ReconcileInterval is how often the runtime and the store are
	// compared; 0 means 5s.
	ReconcileInterval time.Duration
	// ArchiveAfter is how long a paused sandbox stays frozen before it is
	// archived, unless it says otherwise; 0 means 10 minutes.
	ArchiveAfter time.Duration
	Log          *slog.Logger
	Registry     prometheus.Registerer
}

// Service is the lifecycle service.
type Service struct {
	rt     runtime.Runtime
	st     Store
	events *events.Broker
	cfg    Config

	admitMu sync.Mutex // serialises capacity check and row write

	tplMu    sync.Mutex
	tplCache map[string]resolved

	locks keyedMutex // one pause, resume, archive or reconcile of a sandbox at a time
	m     *metrics

	mu       sync.Mutex
	activity map[string]*activity
	streams  map[string]int // open process streams, by sandbox
	closing  bool
	bg       sync.WaitGroup // retirements and the reaper
	stop     context.CancelFunc
}

// New makes a service. Call Start to recover state and start the reaper.
func New(rt runtime.Runtime, st Store, ev *events.Broker, cfg Config) *Service {
	if cfg.MaxSandboxes == 0 {
		cfg.MaxSandboxes = 1000
	}
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = time.Second
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Second
	}
	if cfg.ArchiveAfter == 0 {
		cfg.ArchiveAfter = 10 * time.Minute
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{rt: rt, st: st, events: ev, cfg: cfg, activity: map[string]*activity{}, streams: map[string]int{}, tplCache: map[string]resolved{},
		m: newMetrics(cfg.Registry)}
}

// Events is the broker transitions are published on.
func (s *Service) Events() *events.Broker { return s.events }

func (s *Service) publish(sb store.Sandbox, status Status, reason, errMsg string) {
	s.events.Publish(events.Event{Type: "sandbox", Sandbox: sb.ID, Tenant: sb.Tenant, Status: string(status), Reason: reason, Error: errMsg})
}

// transition writes a status change to the store, then publishes it.
func (s *Service) transition(ctx context.Context, sb store.Sandbox, from []Status, to Status, reason, errMsg string) error {
	fromS := make([]string, len(from))
	for i, f := range from {
		fromS[i] = string(f)
	}
	if err := s.st.SetStatus(ctx, sb.ID, fromS, string(to), errMsg); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return errdefs.Userf(errdefs.ErrConflict, "%v", err)
		}
		return err
	}
	s.publish(sb, to, reason, errMsg)
	return nil
}

// Create makes a sandbox for tenant. id may be given (idempotent creates
// pick it in advance) or empty.
func (s *Service) Create(ctx context.Context, tenant, id string, req CreateRequest) (Sandbox, error) {
	row, err := s.create(ctx, newSandbox{tenant: tenant, id: id, req: req, final: StatusRunning})
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// newSandbox is one sandbox to make.
type newSandbox struct {
	tenant, id string
	req        CreateRequest
	pool       string
	uses       int
	// final is the status once made: running for a caller, ready for a
	// pool's idle buffer.
	final Status
	// fence, if set, makes the row's creation and its final status depend
	// on a pool leader's lease.
	fence *store.Fence
	// progress, if set, gets the template's setup output as it comes.
	progress io.Writer
}

// create makes a sandbox: checks, writes the row, has the runtime make
// it, runs the template's setup (then seals it, so a reset returns here)
// and session setup, and records the final status. On failure nothing of
// the sandbox is left running and its row says why.
func (s *Service) create(ctx context.Context, n newSandbox) (store.Sandbox, error) {
	req := n.req
	if err := req.Validate(); err != nil {
		return store.Sandbox{}, err
	}
	id := n.id
	if id == "" {
		id = ids.Sandbox()
	}
	rootfs, hooks, err := s.resolveTemplate(ctx, req.Template)
	if err != nil {
		return store.Sandbox{}, err
	}
	// Bad input changes nothing: check before anything is written.
	if err := s.rt.Validate(runtime.Spec{ID: id, Template: rootfs, Limits: req.Limits}); err != nil {
		return store.Sandbox{}, err
	}
	// Record the limits the sandbox will really have.
	req.Limits = req.Limits.WithDefaults(s.rt.Capabilities().Defaults)
	b, err := json.Marshal(spec{Limits: req.Limits, Env: req.Env, Rootfs: rootfs})
	if err != nil {
		return store.Sandbox{}, err
	}
	if req.OnTimeout == "" {
		req.OnTimeout = OnTimeoutPause
	}
	row := store.Sandbox{ID: id, Tenant: n.tenant, Template: req.Template, Status: string(StatusCreating),
		Spec: string(b), Metadata: req.Metadata, Node: s.cfg.Node, Pool: n.pool, Uses: n.uses,
		Timeout: req.Timeout, OnTimeout: req.OnTimeout, ArchiveAfter: req.ArchiveAfter, Fence: n.fence, CreatedAt: time.Now().UTC()}
	if err := s.admit(ctx, row); err != nil {
		return store.Sandbox{}, s.storeErr(err)
	}
	s.publish(row, StatusCreating, "", "")
	// The sandbox must not be half made if the caller goes away.
	cctx := context.WithoutCancel(ctx)
	fail := func(err error) (store.Sandbox, error) {
		_ = s.rt.Destroy(cctx, id) // best effort; the reconciler catches the rest
		if terr := s.transition(cctx, row, []Status{StatusCreating}, StatusFailed, "create", err.Error()); terr != nil {
			s.cfg.Log.Error("record failed create", "sandbox", id, "err", terr)
		}
		return store.Sandbox{}, fmt.Errorf("create sandbox: %w", err)
	}
	if _, err := s.rt.Create(cctx, runtime.Spec{ID: id, Template: rootfs, Limits: req.Limits}); err != nil {
		return fail(err)
	}
	if hooks.Setup != "" {
		if err := s.runHook(cctx, row, "setup", hooks.Setup, hooks.setupTimeout(), n.progress); err != nil {
			return fail(err)
		}
		if err := s.rt.Seal(cctx, id); err != nil {
			return fail(err)
		}
	}
	if hooks.SessionSetup != "" {
		if err := s.runHook(cctx, row, "session_setup", hooks.SessionSetup, hooks.setupTimeout(), n.progress); err != nil {
			return fail(err)
		}
	}
	final := string(n.final)
	if err := s.st.UpdateSandbox(cctx, id, []string{string(StatusCreating)}, store.Update{Status: &final, Fence: n.fence}); err != nil {
		// Not recorded (deleted meanwhile, the store failed, or the pool
		// leader's lease lapsed): a sandbox nobody may hand out must not
		// run on.
		_ = s.rt.Destroy(cctx, id) // best effort; the reconciler catches the rest
		failed := string(StatusFailed)
		_ = s.st.UpdateSandbox(cctx, id, []string{string(StatusCreating)}, store.Update{Status: &failed, Error: new(err.Error())}) // best effort
		return store.Sandbox{}, s.storeErr(err)
	}
	s.publish(row, n.final, "created", "")
	row.Status = string(n.final)
	if n.final == StatusRunning {
		s.track(row, time.Now())
	}
	return s.st.GetSandbox(ctx, id)
}

// HasRoom reports whether this node may start another sandbox.
func (s *Service) HasRoom(ctx context.Context) bool {
	n, err := s.ActiveOn(ctx, s.cfg.Node)
	return err == nil && n < s.cfg.MaxSandboxes
}

// ActiveOn counts the sandboxes that exist on node.
func (s *Service) ActiveOn(ctx context.Context, node string) (int, error) {
	return s.st.CountSandboxes(ctx, store.Filter{Node: node, Statuses: statusStrings(Active)})
}

// admit checks capacity and writes the new sandbox's row, before the
// runtime acts: a crash from then on is found by the next start and
// cleaned. The check and the write are one step (admitMu), so concurrent
// creates cannot overshoot MaxSandboxes.
func (s *Service) admit(ctx context.Context, row store.Sandbox) error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrShuttingDown
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	active, err := s.ActiveOn(ctx, s.cfg.Node)
	if err != nil {
		return err
	}
	if active >= s.cfg.MaxSandboxes {
		return fmt.Errorf("%w: %d sandboxes on this node", ErrCapacity, active)
	}
	if err := s.st.CreateSandbox(ctx, row); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return errdefs.Userf(errdefs.ErrExists, "sandbox %s already exists", row.ID)
		}
		return err
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
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us; an old row shows empty limits
	sb := Sandbox{ID: row.ID, Tenant: row.Tenant, Template: row.Template, Status: Status(row.Status),
		Limits: sp.Limits, Env: sp.Env, Metadata: row.Metadata, Error: row.Error,
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

// row reads a sandbox of tenant; another tenant's sandbox is not found.
func (s *Service) row(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) || (err == nil && row.Tenant != tenant) {
		return store.Sandbox{}, errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", id)
	}
	return row, err
}

// Get returns one sandbox.
func (s *Service) Get(ctx context.Context, tenant, id string) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// ListOptions filter List.
type ListOptions struct {
	// Statuses to include; empty means the active ones.
	Statuses []Status
	// Metadata entries a sandbox must all have.
	Metadata map[string]string
	// Pool, if set, keeps only that pool's sandboxes.
	Pool string
}

// List returns tenant's sandboxes, oldest first.
func (s *Service) List(ctx context.Context, tenant string, opts ListOptions) ([]Sandbox, error) {
	statuses := opts.Statuses
	if len(statuses) == 0 {
		statuses = Active
	}
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Tenant: tenant, Pool: opts.Pool, Statuses: statusStrings(statuses)})
	if err != nil {
		return nil, err
	}
	out := make([]Sandbox, 0, len(rows))
	for _, row := range rows {
		match := true
		for k, v := range opts.Metadata {
			if row.Metadata[k] != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, s.fromRow(row))
		}
	}
	return out, nil
}

// Delete destroys a sandbox. Deleting a stopped or failed one does nothing.
func (s *Service) Delete(ctx context.Context, tenant, id string) error {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return err
	}
	unlock := s.locks.lock(id) // not in the middle of a pause or resume
	defer unlock()
	return s.destroy(ctx, row, "deleted")
}

func (s *Service) destroy(ctx context.Context, row store.Sandbox, reason string) error {
	switch Status(row.Status) {
	case StatusStopped, StatusFailed, StatusLost:
		// Nothing runs; make sure of it (a failed create may have left
		// part of a sandbox when its cleanup failed).
		return s.rt.Destroy(context.WithoutCancel(ctx), row.ID)
	}
	err := s.transition(ctx, row, []Status{StatusCreating, StatusReady, StatusRunning, StatusResetting, StatusPaused}, StatusStopping, reason, "")
	if err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return nil // someone else is stopping it
		}
		return err
	}
	s.forget(row.ID)
	cctx := context.WithoutCancel(ctx)
	if err := s.rt.Destroy(cctx, row.ID); err != nil {
		_ = s.transition(cctx, row, []Status{StatusStopping}, StatusFailed, reason, "destroy: "+err.Error()) // best effort: the error is returned
		return fmt.Errorf("destroy sandbox %s: %w", row.ID, err)
	}
	return s.transition(cctx, row, []Status{StatusStopping}, StatusStopped, reason, row.Error)
}

// running returns the row of a running sandbox of tenant, or the error to
// give the caller, and marks activity.
func (s *Service) running(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return row, err
	}
	if row.Node != s.cfg.Node {
		return row, fmt.Errorf("%w: sandbox %s lives on node %s", ErrElsewhere, id, row.Node)
	}
	switch Status(row.Status) {
	case StatusRunning:
	case StatusPaused:
		if !autoResume(ctx) {
			return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is paused (resume it, or allow calls to resume it)", id)
		}
		if _, err := s.resume(ctx, row, "traffic"); err != nil {
			return row, err
		}
		if row, err = s.st.GetSandbox(ctx, id); err != nil {
			return row, err
		}
		if Status(row.Status) != StatusRunning {
			return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
		}
	case StatusFailed:
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s has failed: %s", id, row.Error)
	default:
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	// Touched under s.mu, where a pause checks activity and says it is
	// pausing: either the pause sees this call and gives up (a timeout),
	// or this call sees the pause, waits for it and resumes the sandbox.
	s.mu.Lock()
	a := s.activity[id]
	pausing := a != nil && a.pausing
	if a != nil && !pausing {
		a.last, a.dirty = time.Now(), true
	}
	s.mu.Unlock()
	if a == nil && row.Pool != "" {
		// A pool's sandbox handed out through another node: its activity
		// is tracked here, where it runs.
		s.track(row, time.Now())
	}
	if pausing {
		return s.runningAgain(ctx, tenant, id)
	}
	return row, nil
}

// runningAgain waits for a pause under way, then resumes the sandbox (or
// refuses, without auto-resume).
func (s *Service) runningAgain(ctx context.Context, tenant, id string) (store.Sandbox, error) {
	unlock := s.locks.lock(id) // the pause holds it until it is done
	unlock()
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return row, err
	}
	if Status(row.Status) == StatusPaused {
		if !autoResume(ctx) {
			return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is paused (resume it, or allow calls to resume it)", id)
		}
		if _, err := s.resume(ctx, row, "traffic"); err != nil {
			return row, err
		}
		row, err = s.st.GetSandbox(ctx, id)
		if err != nil {
			return row, err
		}
	}
	if Status(row.Status) != StatusRunning {
		return row, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, row.Status)
	}
	s.touch(id)
	return row, nil
}

// check retires the sandbox if err says it is broken, and returns err.
func (s *Service) check(row store.Sandbox, err error) error {
	if err == nil || !errdefs.IsStateError(err) {
		return err
	}
	s.retire(row, err)
	return err
}

// retire takes a broken sandbox out of service in the background. A pool's
// sandbox is marked failed and destroyed (the pool makes another). A
// caller's sandbox keeps its files: its processes are stopped and it is
// marked paused and archived, with the cause, so a resume starts it again
// (the reconciler treats a sandbox that lost its processes the same way).
func (s *Service) retire(row store.Sandbox, cause error) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		unlock := s.locks.lock(row.ID)
		defer unlock()
		s.cfg.Log.Warn("retiring broken sandbox", "sandbox", row.ID, "err", cause)
		if row.Pool == "" && Status(row.Status) == StatusRunning {
			if err := s.rt.Stop(ctx, row.ID); err == nil {
				paused, now := string(StatusPaused), time.Now()
				msg := "it broke (" + cause.Error() + "); its files are kept: resume starts it again"
				if err := s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusRunning)},
					store.Update{Status: &paused, PausedAt: &now, Archived: new(true), Error: &msg}); err == nil {
					s.forget(row.ID)
					s.publish(row, StatusPaused, "broken", msg)
					return
				}
			}
		}
		if err := s.transition(ctx, row, []Status{StatusRunning, StatusReady, StatusResetting, StatusPaused}, StatusFailed, "broken", cause.Error()); err != nil {
			return // already on its way out
		}
		s.forget(row.ID)
		if err := s.rt.Destroy(ctx, row.ID); err != nil {
			s.cfg.Log.Error("destroy broken sandbox", "sandbox", row.ID, "err", err)
		}
	}()
}

// ExecRequest is a process to run.
type ExecRequest = proc.Spec

func (s *Service) withEnv(row store.Sandbox, req ExecRequest) ExecRequest {
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
	if len(sp.Env) == 0 {
		return req
	}
	env := maps.Clone(sp.Env)
	maps.Copy(env, req.Env)
	req.Env = env
	return req
}

// Exec starts a process. The returned process counts as activity until it
// is closed or has exited.
func (s *Service) Exec(ctx context.Context, tenant, id string, req ExecRequest, stdio proc.Stdio) (proc.Process, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	p, err := s.rt.Exec(ctx, id, s.withEnv(row, req), stdio)
	if err != nil {
		return nil, s.check(row, err)
	}
	return s.tracked(row, p), nil
}

// Attach follows a background process.
func (s *Service) Attach(ctx context.Context, tenant, id, procID string, stdio proc.Stdio) (proc.Process, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	p, err := s.rt.Attach(ctx, id, procID, stdio)
	if err != nil {
		return nil, s.check(row, err)
	}
	return s.tracked(row, p), nil
}

// Processes lists tracked processes.
func (s *Service) Processes(ctx context.Context, tenant, id string) ([]proc.Info, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	ps, err := s.rt.Processes(ctx, id)
	return ps, s.check(row, err)
}

// Signal signals a tracked process.
func (s *Service) Signal(ctx context.Context, tenant, id, procID string, sig syscall.Signal) error {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.check(row, s.rt.Signal(ctx, id, procID, sig))
}

// KillAll kills every process of a sandbox but its agent (what a fork bomb
// left, for one) and returns how many there were.
func (s *Service) KillAll(ctx context.Context, tenant, id string) (int, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return 0, err
	}
	n, err := s.rt.KillAll(ctx, id)
	return n, s.check(row, err)
}

// WriteStdin feeds a tracked process.
func (s *Service) WriteStdin(ctx context.Context, tenant, id, procID string, r io.Reader, closeStdin bool) error {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.check(row, s.rt.WriteStdin(ctx, id, procID, r, closeStdin))
}

// Files gives access to a running sandbox's files.
func (s *Service) Files(ctx context.Context, tenant, id string) (fsys.Files, error) {
	row, err := s.running(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	f := s.rt.Files(id)
	check := func(err error) error { return s.check(row, err) }
	return fsys.Checked(func() (fsys.Files, func(error) error, error) { return f, check, nil }), nil
}

// Close stops the reaper and waits for background work. Sandboxes keep
// running.
func (s *Service) Close() {
	s.mu.Lock()
	s.closing = true
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.bg.Wait()
}

// NodeOf names the node a sandbox lives on ("" if it is not known).
func (s *Service) NodeOf(ctx context.Context, id string) (string, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if err != nil {
		return "", err
	}
	return row.Node, nil
}

// Exists reports whether a sandbox with this id was ever recorded (in any
// status, for any tenant).
func (s *Service) Exists(ctx context.Context, id string) (bool, error) {
	_, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
