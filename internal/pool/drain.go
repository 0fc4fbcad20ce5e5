package pool

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// retireIdle destroys an idle sandbox of p for reason, on whichever node it
// lives, unless it was handed out meanwhile.
func (m *Manager) retireIdle(ctx context.Context, p *pool, sb sandbox.Sandbox, reason string) (bool, error) {
	if sb.NodeName == m.opts.Node || m.opts.Remote == nil {
		return m.svc.RetireIdle(ctx, sb.ID, reason)
	}
	err := m.opts.Remote.Call(ctx, sb.NodeName, p.tenant, "POST", "/v1/internal/sandboxes/"+sb.ID+"/retire?reason="+url.QueryEscape(reason))
	return err == nil, err
}

// Delete drains a pool: acquires are refused from now on, acquires and
// releases under way finish (within DrainTimeout), idle sandboxes are
// destroyed, and the pool is gone. Sandboxes in use stay with their
// callers and are destroyed when released.
func (m *Manager) Delete(ctx context.Context, tenant, name string) error {
	p, err := m.get(ctx, tenant, name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	already, was := p.status == StatusDraining, p.status
	p.status = StatusDraining
	cfg := p.cfg
	p.mu.Unlock()
	if !already {
		b, _ := json.Marshal(cfg) // marshalled before; cannot fail
		// Recorded first: a crash mid-drain is finished at the next start.
		if err := m.st.UpdatePool(ctx, name, string(b), StatusDraining); err != nil {
			p.mu.Lock()
			p.status = was
			p.mu.Unlock()
			return err
		}
		m.publish(p, StatusDraining, "deleted", "")
	}
	p.readied() // waiting acquires give up
	return m.drain(context.WithoutCancel(ctx), p)
}

func (m *Manager) drain(ctx context.Context, p *pool) error {
	p.stop()
	<-p.done
	if !p.inflight.wait(m.opts.DrainTimeout) {
		m.opts.Log.Warn("drain: acquires or releases still under way at the drain timeout", "pool", p.name)
	}
	// Idle and resetting sandboxes go; resets under way end as ready or
	// destroyed, so look again until none is left.
	deadline := time.Now().Add(m.opts.DrainTimeout)
	for {
		counts, err := m.svc.PoolCounts(ctx, p.name)
		if err != nil {
			return err
		}
		idle, err := m.svc.Idle(ctx, p.name, "")
		if err != nil {
			return err
		}
		pending := counts.Creating + counts.Resetting
		for _, sb := range idle {
			if ok, err := m.retireIdle(ctx, p, sb, "drain"); err != nil {
				m.opts.Log.Error("drain: destroy idle sandbox", "pool", p.name, "sandbox", sb.ID, "err", err)
			} else if ok {
				m.m.destroyed.WithLabelValues(p.name, "drain").Inc()
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.st.DeletePool(ctx, p.name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	m.mu.Lock()
	if m.pools[p.name] == p {
		delete(m.pools, p.name)
	}
	m.mu.Unlock()
	m.m.forget(p.name)
	m.publish(p, "deleted", "drained", "")
	return nil
}
