package pool

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// waitPoll is how often a waiting acquire looks for a sandbox readied on
// another node.
const waitPoll = 25 * time.Millisecond

// Acquire outcomes, as counted in metrics.
const (
	OutcomeReused  = "reused"
	OutcomeCreated = "created"
	OutcomeEmpty   = "empty"
	OutcomeFailed  = "failed"
)

// Acquire hands tenant one sandbox of pool name: the longest-idle healthy
// one, taken atomically in the store. An idle sandbox that fails its health
// check is destroyed and the next one tried; only when none is healthy does
// the pool's policy apply. wait, if positive, overrides the pool's
// acquire_timeout for the wait policy.
func (m *Manager) Acquire(ctx context.Context, tenant, name string, wait time.Duration) (sandbox.Sandbox, error) {
	start := time.Now()
	p, err := m.get(ctx, tenant, name)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	p.inflight.add()
	defer p.inflight.done()
	sb, outcome, err := m.acquire(ctx, p, wait)
	if err == nil && ctx.Err() != nil {
		// The caller left while it was handed out: give it back rather
		// than leave it in use by nobody.
		var rerr error
		if sb.NodeName != m.opts.Node && m.opts.Remote != nil {
			rerr = m.opts.Remote.Call(context.WithoutCancel(ctx), sb.NodeName, tenant, "POST", "/v1/sandboxes/"+sb.ID+"/release")
		} else {
			_, rerr = m.Release(context.WithoutCancel(ctx), tenant, sb.ID, SessionOK)
		}
		if rerr != nil {
			m.opts.Log.Warn("give back a sandbox whose caller left", "pool", p.name, "sandbox", sb.ID, "err", rerr)
		}
		sb, outcome, err = sandbox.Sandbox{}, OutcomeFailed, ctx.Err()
	}
	m.m.acquires.WithLabelValues(p.name, outcome).Inc()
	if err == nil {
		m.m.acquireLatency.WithLabelValues(p.name).Observe(time.Since(start).Seconds())
	}
	return sb, err
}

func (m *Manager) acquire(ctx context.Context, p *pool, wait time.Duration) (sandbox.Sandbox, string, error) {
	cfg := p.config()
	if wait <= 0 {
		wait = seconds(cfg.AcquireTimeout)
	}
	deadline := time.Now().Add(wait)
	for {
		p.mu.Lock()
		draining := p.status == StatusDraining
		p.mu.Unlock()
		if draining {
			return sandbox.Sandbox{}, OutcomeFailed, errdefs.Userf(errdefs.ErrConflict, "pool %s is being deleted", p.name)
		}
		ready := p.readyChan() // before looking: a sandbox readied after the look wakes us
		sb, err := m.takeHealthy(ctx, p, cfg)
		if err == nil {
			m.svc.Handed(sb)
			p.nudge() // one fewer idle: replenish
			return sb, OutcomeReused, nil
		}
		if !errors.Is(err, ErrEmpty) {
			return sandbox.Sandbox{}, OutcomeFailed, err
		}
		switch cfg.AcquirePolicy {
		case DirectCreate:
			sb, err := m.createInUse(ctx, p, cfg)
			if err != nil {
				if errors.Is(err, ErrEmpty) {
					return sandbox.Sandbox{}, OutcomeEmpty, err
				}
				return sandbox.Sandbox{}, OutcomeFailed, err
			}
			m.svc.Handed(sb)
			return sb, OutcomeCreated, nil
		case Wait:
			p.nudge()
			left := time.Until(deadline)
			if left <= 0 {
				return sandbox.Sandbox{}, OutcomeEmpty, fmt.Errorf("%w: pool %s had no idle sandbox within %s", ErrEmpty, p.name, wait)
			}
			// Woken when a sandbox becomes ready on this node; with
			// other nodes (where releases and creates happen too), look
			// again every waitPoll as well.
			poll := left
			if m.opts.Remote != nil {
				poll = min(left, waitPoll)
			}
			timer := time.NewTimer(poll)
			select {
			case <-ready:
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return sandbox.Sandbox{}, OutcomeFailed, ctx.Err()
			}
			timer.Stop()
		default:
			p.nudge()
			return sandbox.Sandbox{}, OutcomeEmpty, fmt.Errorf("%w: pool %s has no idle sandbox", ErrEmpty, p.name)
		}
	}
}

// takeHealthy takes idle sandboxes until one passes its health check:
// this node's first, then (with other nodes) any node's. Those that fail
// are destroyed (in the background: the caller is waiting).
func (m *Manager) takeHealthy(ctx context.Context, p *pool, cfg Config) (sandbox.Sandbox, error) {
	node := m.opts.Node
	for {
		sb, err := m.svc.TakeIdle(ctx, p.name, node, cfg.SessionTimeout)
		if errors.Is(err, errdefs.ErrNotFound) && node != "" && m.opts.Remote != nil {
			node = "" // none here: any node's
			continue
		}
		if errors.Is(err, errdefs.ErrNotFound) {
			return sandbox.Sandbox{}, ErrEmpty
		}
		if err != nil {
			return sandbox.Sandbox{}, err
		}
		herr := m.healthCheck(ctx, p, sb, seconds(cfg.HealthCheckTimeout))
		if herr == nil {
			return sb, nil
		}
		if ctx.Err() != nil {
			// The caller left; the sandbox is fine as far as we know.
			m.destroy(p, sb, "health")
			return sandbox.Sandbox{}, ctx.Err()
		}
		m.opts.Log.Warn("idle sandbox failed its health check; trying the next", "pool", p.name, "sandbox", sb.ID, "node", sb.NodeName, "err", herr)
		m.destroy(p, sb, "health")
	}
}

// healthCheck is one agent round trip, on the sandbox's node.
func (m *Manager) healthCheck(ctx context.Context, p *pool, sb sandbox.Sandbox, timeout time.Duration) error {
	if sb.NodeName == m.opts.Node || m.opts.Remote == nil {
		return m.svc.HealthCheck(ctx, sb.ID, timeout)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return m.opts.Remote.Call(hctx, sb.NodeName, p.tenant, "POST", "/v1/internal/sandboxes/"+sb.ID+"/ping")
}

// createInUse makes a sandbox for a caller (direct_create), within max_total.
func (m *Manager) createInUse(ctx context.Context, p *pool, cfg Config) (sandbox.Sandbox, error) {
	if err := m.reserve(ctx, p, cfg, 1); err != nil {
		return sandbox.Sandbox{}, err
	}
	defer m.unreserve(p, 1)
	sb, err := m.svc.CreateForPool(ctx, sandbox.PoolSandbox{Tenant: p.tenant, Pool: p.name, Template: cfg.Template,
		Limits: cfg.Limits, Env: cfg.Env, Network: cfg.Network, InUse: true, MaxTotal: cfg.MaxTotal})
	if errors.Is(err, sandbox.ErrGPUsExhausted) {
		return sb, err // 409 gpus_exhausted: the wait policy waits for one instead
	}
	if errors.Is(err, errdefs.ErrConflict) {
		return sb, fmt.Errorf("%w: pool %s is at max_total %d or being deleted", ErrEmpty, p.name, cfg.MaxTotal)
	}
	return sb, err
}

// reserve claims room for n creates within max_total. Creates under way are
// counted twice (reserved here and, once written, in the store), so the
// pool may briefly stay below max_total but never goes above it.
func (m *Manager) reserve(ctx context.Context, p *pool, cfg Config, n int) error {
	if cfg.MaxTotal == 0 {
		return nil
	}
	counts, err := m.svc.PoolCounts(ctx, p.name)
	if err != nil {
		return err
	}
	total := counts.Total()
	p.mu.Lock()
	defer p.mu.Unlock()
	if total+p.reserved+n > cfg.MaxTotal {
		return fmt.Errorf("%w: pool %s is at max_total %d", ErrEmpty, p.name, cfg.MaxTotal)
	}
	p.reserved += n
	return nil
}

func (m *Manager) unreserve(p *pool, n int) {
	p.mu.Lock()
	p.reserved -= n
	p.mu.Unlock()
}

// Outcomes of a session, given at release.
const (
	SessionOK    = "ok"
	SessionFatal = "fatal" // the sandbox is not to be used again
)

// Release ends a session on a pooled sandbox. A fatal session's sandbox is
// destroyed before Release returns; otherwise, in the background, the
// sandbox is reset for the next session, or destroyed when it has served
// max_uses, the pool has enough idle sandboxes, or the pool is draining.
func (m *Manager) Release(ctx context.Context, tenant, id, outcome string) (sandbox.Sandbox, error) {
	if outcome == "" {
		outcome = SessionOK
	}
	if outcome != SessionOK && outcome != SessionFatal {
		return sandbox.Sandbox{}, errdefs.Userf(errdefs.ErrInvalid, "outcome %q: want ok or fatal", outcome)
	}
	sb, err := m.svc.BeginRelease(ctx, tenant, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	m.mu.Lock()
	p := m.pools[sb.Pool]
	m.mu.Unlock()
	if outcome == SessionFatal || p == nil {
		reason := "fatal"
		if outcome != SessionFatal {
			reason = "drain" // the pool is gone
		}
		if err := m.svc.DestroyPooled(context.WithoutCancel(ctx), id, reason); err != nil {
			return sandbox.Sandbox{}, err
		}
		if p != nil {
			m.m.destroyed.WithLabelValues(p.name, reason).Inc()
			p.nudge()
		}
		sb.Status = sandbox.StatusStopped
		return sb, nil
	}
	// The session has ended; whether the sandbox is kept is decided and
	// done in the background, so the caller does not wait for it.
	m.recycle(p, sb)
	return sb, nil
}

// keep decides whether a released sandbox goes back to the pool, or the
// reason to destroy it.
func (m *Manager) keep(ctx context.Context, p *pool, sb sandbox.Sandbox) string {
	p.mu.Lock()
	cfg, draining := p.cfg, p.status == StatusDraining
	p.mu.Unlock()
	switch {
	case draining:
		return "drain"
	case cfg.MaxUses > 0 && sb.Uses >= cfg.MaxUses:
		return "max_uses"
	}
	p.decide.Lock()
	defer p.decide.Unlock()
	counts, err := m.svc.PoolCounts(ctx, p.name)
	// This one is counted as resetting already.
	if err == nil && counts.Idle+counts.Resetting-1+p.claims >= cfg.MaxIdle {
		return "idle" // enough idle ones
	}
	return ""
}

// recycle resets a released sandbox in the background and makes it idle.
func (m *Manager) recycle(p *pool, sb sandbox.Sandbox) {
	id := sb.ID
	p.inflight.add()
	m.goBG(func() {
		defer p.inflight.done()
		// Not tied to the request or to shutdown: a reset is finished.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		if reason := m.keep(ctx, p, sb); reason != "" {
			if err := m.svc.DestroyPooled(ctx, id, reason); err != nil {
				m.opts.Log.Error("destroy released sandbox", "pool", p.name, "sandbox", id, "err", err)
			}
			m.m.destroyed.WithLabelValues(p.name, reason).Inc()
			p.nudge()
			return
		}
		if err := m.svc.Recycle(ctx, id); err != nil {
			reason := "health"
			if errors.Is(err, errdefs.ErrConflict) {
				reason = "drain" // the pool was deleted meanwhile: no fault
				m.opts.Log.Info("pool deleted during a reset; sandbox destroyed", "pool", p.name, "sandbox", id, "err", err)
			} else {
				m.opts.Log.Warn("reset after release failed; sandbox destroyed", "pool", p.name, "sandbox", id, "err", err)
			}
			m.m.destroyed.WithLabelValues(p.name, reason).Inc()
			p.nudge()
			return
		}
		p.readied()
	})
}

// destroy destroys a sandbox of p, on its node, in the background.
func (m *Manager) destroy(p *pool, sb sandbox.Sandbox, reason string) {
	m.m.destroyed.WithLabelValues(p.name, reason).Inc()
	m.goBG(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		if sb.NodeName == m.opts.Node || m.opts.Remote == nil {
			err = m.svc.DestroyPooled(ctx, sb.ID, reason)
		} else {
			err = m.opts.Remote.Call(ctx, sb.NodeName, p.tenant, "POST", "/v1/internal/sandboxes/"+sb.ID+"/destroy?reason="+url.QueryEscape(reason))
		}
		if err != nil {
			m.opts.Log.Error("destroy pool sandbox", "pool", p.name, "sandbox", sb.ID, "err", err)
		}
		p.nudge()
	})
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
