package pool

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/leader"
	"github.com/sandpool/sandpool/internal/store"
)

// add registers a pool in memory and starts its loop (unless draining).
func (m *Manager) add(name, tenant string, cfg Config, status string, createdAt time.Time) *pool {
	ctx, stop := context.WithCancel(m.ctx)
	p := &pool{name: name, tenant: tenant, cfg: cfg, status: status, createdAt: createdAt, readyCh: make(chan struct{}),
		wake: make(chan struct{}, 1), stop: stop, done: make(chan struct{})}
	m.mu.Lock()
	if have := m.pools[name]; have != nil {
		m.mu.Unlock()
		stop()
		return have // added meanwhile (by a sync, or the create)
	}
	m.pools[name] = p
	m.mu.Unlock()
	if status == StatusDraining {
		close(p.done)
		return p
	}
	m.goBG(func() {
		defer close(p.done)
		leader.Run(ctx, m.st, "pool/"+name, m.opts.Node, leader.Options{TTL: m.opts.LeaseTTL, Log: m.opts.Log},
			func(lctx context.Context, fence store.Fence) {
				p.leading.Store(true)
				defer p.leading.Store(false)
				m.loop(lctx, p, &fence)
			})
	})
	return p
}

// sync brings the pools in memory in line with the store: pools made,
// changed or deleted through another node.
func (m *Manager) sync(ctx context.Context) error {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	rows, err := m.st.ListPools(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, row := range rows {
		seen[row.Name] = true
		var cfg Config
		if err := json.Unmarshal([]byte(row.Config), &cfg); err != nil {
			continue
		}
		m.mu.Lock()
		p := m.pools[row.Name]
		if p != nil && (p.tenant != row.Tenant || !p.createdAt.Equal(row.CreatedAt) ||
			(p.currentStatus() == StatusDraining && row.Status != StatusDraining)) {
			// Deleted and made again under the same name: a new pool.
			delete(m.pools, row.Name)
			p.stop()
			p.readied()
			p = nil
		}
		m.mu.Unlock()
		if p == nil {
			if row.Status != StatusDraining {
				m.add(row.Name, row.Tenant, cfg, row.Status, row.CreatedAt)
			}
			continue
		}
		p.mu.Lock()
		p.cfg = cfg
		draining := row.Status == StatusDraining && p.status != StatusDraining
		if draining {
			p.status = StatusDraining
		}
		p.mu.Unlock()
		if draining {
			p.stop() // the node deleting it drains it
			p.readied()
		}
	}
	m.mu.Lock()
	var gone []*pool
	for name, p := range m.pools {
		if !seen[name] {
			gone = append(gone, p)
			delete(m.pools, name)
		}
	}
	m.mu.Unlock()
	for _, p := range gone {
		p.stop()
		p.readied()
		m.m.forget(p.name)
		// Its idle sandboxes here, if its drain missed any, go too.
		idle, err := m.svc.Idle(ctx, p.name, m.opts.Node)
		if err == nil {
			for _, sb := range idle {
				if ok, err := m.svc.RetireIdle(ctx, sb.ID, "drain"); err == nil && ok {
					m.m.destroyed.WithLabelValues(p.name, "drain").Inc()
				}
			}
		}
	}
	return nil
}

// get finds tenant's pool; another tenant's pool is not found. A pool
// made through another node moments ago is looked up in the store.
func (m *Manager) get(ctx context.Context, tenant, name string) (*pool, error) {
	m.mu.Lock()
	p := m.pools[name]
	m.mu.Unlock()
	if p == nil {
		if err := m.sync(ctx); err != nil {
			return nil, err
		}
		m.mu.Lock()
		p = m.pools[name]
		m.mu.Unlock()
	}
	if p == nil || (tenant != "" && p.tenant != tenant) {
		return nil, errdefs.Userf(errdefs.ErrNotFound, "no pool %q", name)
	}
	return p, nil
}
