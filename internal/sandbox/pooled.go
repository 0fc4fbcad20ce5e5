package sandbox

import (
	"context"
	"errors"
	"fmt"
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
	// InUse hands the sandbox straight to a caller (counted as its first
	// use) instead of leaving it idle in the pool.
	InUse bool
	// Fence is the pool leader's lease: the sandbox is recorded, and made
	// ready, only while it is held.
	Fence *store.Fence
}

// CreateForPool makes a sandbox of a pool: idle ("ready", its session set
// up) or, with InUse, running for a caller.
func (s *Service) CreateForPool(ctx context.Context, p PoolSandbox) (Sandbox, error) {
	n := newSandbox{tenant: p.Tenant, pool: p.Pool, final: StatusReady, fence: p.Fence,
		req: CreateRequest{Template: p.Template, Limits: p.Limits, Env: p.Env}}
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

// Handed records that an acquired sandbox (already "running" in the store)
// is now a caller's: its activity is tracked from here.
func (s *Service) Handed(sb Sandbox) {
	s.track(store.Sandbox{ID: sb.ID, Timeout: sb.Timeout, OnTimeout: sb.OnTimeout}, time.Now())
	s.publish(store.Sandbox{ID: sb.ID, Tenant: sb.Tenant}, StatusRunning, "acquired", "")
}

// FromRow turns a store row into what callers see.
func (s *Service) FromRow(row store.Sandbox) Sandbox { return s.fromRow(row) }

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
func (s *Service) Recycle(ctx context.Context, sb Sandbox) error {
	id := sb.ID
	unlock := s.locks.lock(id) // the reconciler leaves it alone meanwhile
	defer unlock()
	row, err := s.rowOf(ctx, sb)
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
		if herr := s.runHook(ctx, row, "session_teardown", hooks.SessionTeardown, hooks.setupTimeout()); herr != nil {
			s.cfg.Log.Warn("session teardown failed", "sandbox", id, "err", herr)
		}
	}
	if err == nil {
		_, err = s.rt.Reset(ctx, id)
	}
	if err == nil && hooks.SessionSetup != "" {
		err = s.runHook(ctx, row, "session_setup", hooks.SessionSetup, hooks.setupTimeout())
	}
	if err == nil {
		// Back to the pool only if the pool is still there.
		ready := string(StatusReady)
		err = s.st.UpdateSandbox(ctx, row.ID, []string{string(StatusResetting)}, store.Update{Status: &ready, Fence: &store.Fence{Pool: row.Pool}})
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

// rowOf rebuilds the store row of a sandbox the caller just had from the
// service (as BeginRelease returns it), or reads it when it lacks one.
func (s *Service) rowOf(ctx context.Context, sb Sandbox) (store.Sandbox, error) {
	if sb.spec == "" {
		return s.st.GetSandbox(ctx, sb.ID)
	}
	return store.Sandbox{ID: sb.ID, Tenant: sb.Tenant, Template: sb.Template, Status: string(sb.Status), Spec: sb.spec,
		Metadata: sb.Metadata, Error: sb.Error, Node: sb.NodeName, Pool: sb.Pool, Uses: sb.Uses,
		CreatedAt: sb.CreatedAt, UpdatedAt: sb.UpdatedAt}, nil
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
	if err := s.rt.Destroy(cctx, id); err != nil {
		_ = s.transition(cctx, row, []Status{StatusStopping}, StatusFailed, reason, "destroy: "+err.Error()) // best effort: the error is returned
		return true, fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return true, s.transition(cctx, row, []Status{StatusStopping}, StatusStopped, reason, "")
}
