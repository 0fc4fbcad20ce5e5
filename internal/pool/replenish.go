package pool

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/loop"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

// loop keeps one pool filled until ctx ends: a round at once, then every
// Tick or when woken. Each round has its own deadline, and a failing (or
// panicking) round never ends the loop.
func (m *Manager) loop(ctx context.Context, p *pool, fence *store.Fence) {
	loop.Run(ctx, loop.Options{Name: "pool " + p.name, Every: m.opts.Tick, Timeout: 15 * time.Minute, Now: true,
		Wake: p.wake, Log: m.opts.Log}, func(rctx context.Context) error { return m.replenish(rctx, p, fence) })
}

// replenish is one round: shed idle sandboxes above max_idle or idle
// longer than max_idle_time (keeping min_idle), then create up to min_idle
// within max_total, backing off while creates fail.
func (m *Manager) replenish(ctx context.Context, p *pool, fence *store.Fence) error {
	cfg := p.config()
	in, err := m.info(ctx, p)
	if err != nil {
		return err
	}
	idle := in.Idle
	if idle > cfg.MinIdle {
		rows, err := m.svc.Idle(ctx, p.name, "") // longest idle first
		if err != nil {
			return err
		}
		now := time.Now()
		for _, sb := range rows {
			if idle <= cfg.MinIdle {
				break
			}
			reason := ""
			switch {
			case idle > cfg.MaxIdle:
				reason = "idle"
			case cfg.MaxIdleTime > 0 && now.Sub(sb.UpdatedAt) > seconds(cfg.MaxIdleTime):
				reason = "idle"
			default:
				continue
			}
			ok, err := m.retireIdle(ctx, p, sb, reason)
			if err != nil {
				m.opts.Log.Error("destroy idle sandbox", "pool", p.name, "sandbox", sb.ID, "err", err)
				continue
			}
			if ok { // else acquired meanwhile
				m.m.destroyed.WithLabelValues(p.name, reason).Inc()
				idle--
			}
		}
	}

	p.mu.Lock()
	backoff := time.Until(p.retryAt)
	p.mu.Unlock()
	if backoff > 0 {
		return nil
	}
	want, err := m.claim(ctx, p, cfg)
	if err != nil || want == 0 {
		return err
	}
	// Each create's claim ends with the write that makes its sandbox
	// idle (under decide, so a count in between sees it once: claimed or
	// idle); what is left of the round's claims ends with the round.
	released := 0
	commit := func(write func() error) error {
		p.decide.Lock()
		defer p.decide.Unlock()
		err := write()
		if err == nil {
			p.claims--
			released++
		}
		return err
	}
	defer func() {
		p.decide.Lock()
		p.claims -= want - released
		p.decide.Unlock()
	}()
	if cfg.MaxTotal > 0 {
		defer m.unreserve(p, want)
	}
	var wg sync.WaitGroup
	errs := make([]error, want)
	for i := range want {
		wg.Go(func() {
			_, errs[i] = m.svc.CreateForPool(ctx, sandbox.PoolSandbox{Tenant: p.tenant, Pool: p.name,
				Template: cfg.Template, Limits: cfg.Limits, Env: cfg.Env, Network: cfg.Network, Lease: fence, MaxTotal: cfg.MaxTotal, Commit: commit})
		})
	}
	wg.Wait()
	created := 0
	var failed []string
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case errors.Is(err, sandbox.ErrGPUsExhausted):
			// No room on the node's GPUs: not the pool's failure. The
			// next round (every tick) tries again; nothing was written.
		default:
			failed = append(failed, err.Error())
		}
	}
	if created > 0 {
		p.readied()
	}
	if ctx.Err() != nil {
		return nil // stopped mid-round (drain, shutdown): not the pool's failure
	}
	m.recordCreates(p, created, failed)
	if created > 0 && len(failed) == 0 {
		p.nudge() // more may be needed
	}
	return nil
}

// claim decides how many idle sandboxes to create now and claims them:
// enough for min_idle counting those idle, resetting and being created,
// at most MaxParallelCreates, and within max_total (reserved).
func (m *Manager) claim(ctx context.Context, p *pool, cfg Config) (int, error) {
	p.decide.Lock()
	defer p.decide.Unlock()
	counts, err := m.svc.PoolCounts(ctx, p.name)
	if err != nil {
		return 0, err
	}
	have := counts.Idle + counts.Resetting + p.claims
	want := min(cfg.MinIdle-have, m.opts.MaxParallelCreates)
	if cfg.MaxTotal > 0 {
		for want > 0 && m.reserve(ctx, p, cfg, want) != nil {
			want-- // only as many as fit
		}
	}
	if want <= 0 {
		return 0, nil
	}
	p.claims += want
	return want, nil
}

// degradeAfter consecutive failed creates marks a pool degraded.
const degradeAfter = 3

// recordCreates tracks create failures: after degradeAfter in a row the
// pool is degraded and creates back off exponentially (1s doubling to a
// minute); a success makes it active again.
func (m *Manager) recordCreates(p *pool, created int, failed []string) {
	p.mu.Lock()
	status := p.status
	var event, errMsg string
	switch {
	case len(failed) > 0:
		p.failures += len(failed)
		p.lastErr = failed[len(failed)-1]
		errMsg = p.lastErr
		if p.failures >= degradeAfter {
			shift := min(p.failures-degradeAfter, 6)
			p.retryAt = time.Now().Add(time.Second << shift)
			if p.status == StatusActive {
				p.status, event = StatusDegraded, StatusDegraded
			}
		}
	case created > 0:
		p.failures, p.retryAt = 0, time.Time{}
		if p.status == StatusDegraded {
			p.status, p.lastErr, event = StatusActive, "", StatusActive
		}
	}
	p.mu.Unlock()
	if len(failed) > 0 {
		m.opts.Log.Warn("pool could not create sandboxes", "pool", p.name, "failed", len(failed), "status", status,
			"err", strings.Join(failed, "; "))
	}
	if event != "" {
		reason := "creates failing"
		if event == StatusActive {
			reason = "creates succeed again"
		}
		m.publish(p, event, reason, errMsg)
	}
}

func sortInfos(in []Info) {
	slices.SortFunc(in, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
}
