package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

// This file is what the pool manager needs of the service: sandboxes made
// for a pool, handed out, checked, reset and destroyed. Pool policy lives
// in internal/pool.

// PoolSandbox asks for a sandbox of a pool.
type PoolSandbox struct {
	Tenant   string
	Pool     string
	Template string
	Limits   runtime.Limits
	Env      map[string]string
	// Network is the pool's egress policy (nil: the server's default);
	// each reset gives it back to a sandbox whose session changed it.
	Network *Network
	// InUse hands the sandbox straight to a caller (counted as its first
	// use) instead of leaving it idle in the pool.
	InUse bool
	// Lease, if set, is the pool leader's: the sandbox is recorded, and
	// made ready, only while it is held.
	Lease *store.Fence
	// MaxTotal, if set, bounds the pool's sandboxes: none is recorded past
	// it (checked in the store, with the write).
	MaxTotal int
	// Commit, if set, runs the write that records the sandbox in its
	// final status (write): the pool counts a create under way as one of
	// its own until then, and by doing both under one lock it never
	// counts the sandbox twice, or not at all.
	Commit func(write func() error) error
}

// CreateForPool makes a sandbox of a pool: idle ("ready", its session set
// up) or, with InUse, running for a caller.
func (s *Service) CreateForPool(ctx context.Context, p PoolSandbox) (Sandbox, error) {
	// Every write is fenced on the pool still being there (and, for
	// creates, on max_total), and on the lease when a leader makes it.
	fence := &store.Fence{Pool: p.Pool, MaxInPool: p.MaxTotal, Counted: statusStrings(Active)}
	if p.Lease != nil {
		fence.Lease, fence.Holder, fence.Term = p.Lease.Lease, p.Lease.Holder, p.Lease.Term
	}
	net := s.networkFor(p.Network)
	n := newSandbox{tenant: p.Tenant, pool: p.Pool, final: StatusReady, fence: fence, poolNetwork: &net, commit: p.Commit,
		req: CreateRequest{Template: p.Template, Limits: p.Limits, Env: p.Env, Network: &net}}
	if p.InUse {
		n.final, n.uses = StatusRunning, 1
	}
	row, err := s.create(ctx, n)
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// HealthCheck is one round trip to the sandbox's agent within timeout.
func (s *Service) HealthCheck(ctx context.Context, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.rt.Ping(ctx, id)
}

// TakeIdle takes the longest-idle sandbox of pool (on node, if not empty)
// for a session: atomically, so no two callers get the same one. It is
// running from then on, with the session's inactivity timeout (seconds;
// killed when it passes; 0: none). ErrNotFound if none is idle. Call
// Handed once the caller keeps it.
func (s *Service) TakeIdle(ctx context.Context, pool, node string, sessionTimeout int) (Sandbox, error) {
	row, err := s.st.TakeIdle(ctx, store.Take{Pool: pool, Node: node, From: string(StatusReady), To: string(StatusRunning),
		SessionTimeout: sessionTimeout, OnTimeout: OnTimeoutKill})
	if err != nil {
		return Sandbox{}, err
	}
	return s.fromRow(row), nil
}

// Handed records that a sandbox taken from its pool is now a caller's:
// its node tracks its activity from here.
func (s *Service) Handed(sb Sandbox) {
	if sb.NodeName == s.cfg.Node {
		s.track(store.Sandbox{ID: sb.ID, Timeout: sb.Timeout, OnTimeout: sb.OnTimeout}, time.Now())
	}
	s.publish(store.Sandbox{ID: sb.ID, Tenant: sb.Tenant}, StatusRunning, "acquired", "")
}

// PoolCounts are a pool's sandboxes by what they are doing.
type PoolCounts struct {
	Idle      int // ready for a session
	InUse     int // a caller's (running or paused)
	Creating  int
	Resetting int // released, being reset
	Stopping  int
}

// Total is every sandbox of the pool that exists (what max_total bounds).
func (c PoolCounts) Total() int { return c.Idle + c.InUse + c.Creating + c.Resetting + c.Stopping }

// PoolCounts counts a pool's sandboxes on every node.
func (s *Service) PoolCounts(ctx context.Context, pool string) (PoolCounts, error) {
	n, err := s.st.CountByStatus(ctx, store.Filter{Pool: pool, Statuses: statusStrings(Active)})
	if err != nil {
		return PoolCounts{}, err
	}
	return PoolCounts{Idle: n[string(StatusReady)], InUse: n[string(StatusRunning)] + n[string(StatusPaused)],
		Creating: n[string(StatusCreating)], Resetting: n[string(StatusResetting)], Stopping: n[string(StatusStopping)]}, nil
}

// Idle lists a pool's idle sandboxes (on node, if not empty), longest idle
// first (UpdatedAt is when each became idle).
func (s *Service) Idle(ctx context.Context, pool, node string) ([]Sandbox, error) {
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Pool: pool, Node: node, Statuses: []string{string(StatusReady)}})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(rows, func(a, b store.Sandbox) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	return s.fromRows(rows), nil
}

// Resetting lists this node's sandboxes whose reset a crash cut short.
func (s *Service) Resetting(ctx context.Context) ([]Sandbox, error) {
	rows, err := s.st.ListSandboxes(ctx, store.Filter{Node: s.cfg.Node, Statuses: []string{string(StatusResetting)}})
	if err != nil {
		return nil, err
	}
	return s.fromRows(rows), nil
}

func (s *Service) fromRows(rows []store.Sandbox) []Sandbox {
	out := make([]Sandbox, len(rows))
	for i, row := range rows {
		out[i] = s.fromRow(row)
	}
	return out
}

// BeginRelease moves a caller's pooled sandbox from running to resetting;
// only one release of a session succeeds.
func (s *Service) BeginRelease(ctx context.Context, tenant, id string) (Sandbox, error) {
	row, err := s.row(ctx, tenant, id)
	if err != nil {
		return Sandbox{}, err
	}
	if row.Pool == "" {
		return Sandbox{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is not from a pool; delete it instead", id)
	}
	if Status(row.Status) != StatusRunning {
		return Sandbox{}, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s, not in use", id, row.Status)
	}
	if row.Node != s.cfg.Node {
		return Sandbox{}, fmt.Errorf("%w: sandbox %s lives on node %s", ErrElsewhere, id, row.Node)
	}
	unlock := s.locks.lock(id) // not in the middle of a reconcile
	defer unlock()
	if err := s.transition(ctx, row, []Status{StatusRunning}, StatusResetting, "released", ""); err != nil {
		return Sandbox{}, err
	}
	s.forget(id)
	row.Status = string(StatusResetting)
	return s.fromRow(row), nil
}

// Recycle ends a released sandbox's session and makes it idle again:
// session_teardown, then every process killed and every file written
// discarded, then session_setup for the next session. On failure the
// sandbox is destroyed and the error returned.
func (s *Service) Recycle(ctx context.Context, id string) error {
	unlock := s.locks.lock(id) // the reconciler leaves it alone meanwhile
	defer unlock()
	row, err := s.st.GetSandbox(ctx, id)
	if err != nil {
		return err
	}
	if Status(row.Status) != StatusResetting {
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s, not resetting", id, row.Status)
	}
	_, hooks, err := s.resolveTemplate(ctx, row.Template)
	if err == nil && hooks.SessionTeardown != "" {
		// A failing teardown is the session's business; the reset
		// below clears what it left either way.
		if herr := s.runHook(ctx, row, "session_teardown", hooks.SessionTeardown, hooks.setupTimeout(), nil); herr != nil {
			s.cfg.Log.Warn("session teardown failed", "sandbox", id, "err", herr)
		}
	}
	if err == nil {
		_, err = s.rt.Reset(ctx, id)
	}
	if err == nil {
		err = s.restoreNetwork(ctx, row)
	}
	if err == nil && hooks.SessionSetup != "" {
		err = s.runHook(ctx, row, "session_setup", hooks.SessionSetup, hooks.setupTimeout(), nil)
	}
	if err == nil {
		// Back to the pool only if the pool is still there.
		// The session's environment and metadata go with it.
		ready := string(StatusReady)
		metadata, spec := endSession(row)
		err = s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusResetting)}, store.Update{Status: &ready,
			Metadata: metadata, Spec: spec, Fence: &store.Fence{Pool: row.Pool}})
		if err == nil {
			s.publish(row, StatusReady, "reset", "")
		}
	}
	if err != nil {
		reason := "reset_failed"
		if errors.Is(err, errdefs.ErrConflict) {
			reason = "drain"
		}
		if derr := s.destroy(context.WithoutCancel(ctx), row, reason); derr != nil {
			s.cfg.Log.Error("destroy sandbox after a failed reset", "sandbox", id, "err", derr)
		}
		return fmt.Errorf("reset sandbox %s: %w", id, err)
	}
	return nil
}

// DestroyPooled destroys a sandbox of a pool for reason (recorded, and
// published with the events).
func (s *Service) DestroyPooled(ctx context.Context, id, reason string) error {
	row, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.destroy(ctx, row, reason)
}

// RetireIdle destroys an idle sandbox of a pool for reason, unless it was
// handed out meanwhile (then it returns false and touches nothing).
func (s *Service) RetireIdle(ctx context.Context, id, reason string) (bool, error) {
	row, err := s.st.GetSandbox(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := s.transition(ctx, row, []Status{StatusReady}, StatusStopping, reason, ""); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return false, nil
		}
		return false, err
	}
	s.forget(id)
	cctx := context.WithoutCancel(ctx)
	err = s.rt.Destroy(cctx, id)
	s.releaseGPUs(id)
	if err != nil {
		_ = s.transition(cctx, row, []Status{StatusStopping}, StatusFailed, reason, "destroy: "+err.Error()) // best effort: the error is returned
		return true, fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return true, s.transition(cctx, row, []Status{StatusStopping}, StatusStopped, reason, "")
}
