package pool

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/store"
)

// Info is a pool as callers see it: its settings, status and live counts.
type Info struct {
	Config
	Status    string    `json:"status"`
	LastError string    `json:"last_error,omitempty"`
	Idle      int       `json:"idle"`
	InUse     int       `json:"in_use"`
	Creating  int       `json:"creating"`
	Resetting int       `json:"resetting"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Leader is this node's name if it holds the pool's lease (it alone
	// fills and sheds the pool); empty otherwise.
	Leader string `json:"leader,omitempty"`
}

func (m *Manager) info(ctx context.Context, p *pool) (Info, error) {
	counts, err := m.svc.PoolCounts(ctx, p.name)
	if err != nil {
		return Info{}, err
	}
	p.mu.Lock()
	in := Info{Config: p.cfg, Status: p.status, LastError: p.lastErr}
	p.mu.Unlock()
	if p.leading.Load() {
		in.Leader = m.opts.Node
	}
	in.Idle, in.InUse, in.Creating, in.Resetting = counts.Idle, counts.InUse, counts.Creating, counts.Resetting
	m.m.observe(p.name, in)
	return in, nil
}

// Create makes a pool for tenant; its loop starts filling it at once.
func (m *Manager) Create(ctx context.Context, tenant string, cfg Config) (Info, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Info{}, err
	}
	if err := m.svc.CheckTemplate(ctx, cfg.Template, cfg.Limits); err != nil {
		return Info{}, err
	}
	if err := m.svc.CheckNetwork(ctx, cfg.Template, cfg.Network); err != nil {
		return Info{}, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return Info{}, err
	}
	row := store.Pool{Name: cfg.Name, Tenant: tenant, Config: string(b), Status: StatusActive, CreatedAt: time.Now().UTC()}
	if err := m.st.CreatePool(ctx, row); err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return Info{}, errdefs.Userf(errdefs.ErrExists, "pool %q already exists", cfg.Name)
		}
		return Info{}, err
	}
	if got, err := m.st.GetPool(ctx, cfg.Name); err == nil {
		row.CreatedAt = got.CreatedAt // as the store keeps it (its precision)
	}
	p := m.add(cfg.Name, tenant, cfg, StatusActive, row.CreatedAt)
	m.publish(p, StatusActive, "created", "")
	in, err := m.info(ctx, p)
	in.CreatedAt = row.CreatedAt
	return in, err
}

// Get returns one pool.
func (m *Manager) Get(ctx context.Context, tenant, name string) (Info, error) {
	p, err := m.get(ctx, tenant, name)
	if err != nil {
		return Info{}, err
	}
	return m.info(ctx, p)
}

// List returns tenant's pools.
func (m *Manager) List(ctx context.Context, tenant string) ([]Info, error) {
	m.mu.Lock()
	var ps []*pool
	for _, p := range m.pools {
		if p.tenant == tenant {
			ps = append(ps, p)
		}
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(ps))
	for _, p := range ps {
		in, err := m.info(ctx, p)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	sortInfos(out)
	return out, nil
}

// Update is a change of settings; nil fields keep their value.
type Update struct {
	MinIdle            *int     `json:"min_idle,omitempty"`
	MaxIdle            *int     `json:"max_idle,omitempty"`
	MaxTotal           *int     `json:"max_total,omitempty"`
	MaxUses            *int     `json:"max_uses,omitempty"`
	MaxIdleTime        *float64 `json:"max_idle_time,omitempty"`
	AcquirePolicy      *string  `json:"acquire_policy,omitempty"`
	AcquireTimeout     *float64 `json:"acquire_timeout,omitempty"`
	HealthCheckTimeout *float64 `json:"health_check_timeout,omitempty"`
	SessionTimeout     *int     `json:"session_timeout,omitempty"`
}

// Update changes a pool's settings. Sessions in progress are untouched: a
// smaller pool sheds idle sandboxes only, and in-use ones over the new
// limits are destroyed when released.
func (m *Manager) Update(ctx context.Context, tenant, name string, u Update) (Info, error) {
	p, err := m.get(ctx, tenant, name)
	if err != nil {
		return Info{}, err
	}
	p.updateMu.Lock() // one change of settings at a time
	defer p.updateMu.Unlock()
	p.mu.Lock()
	cfg, status := p.cfg, p.status
	p.mu.Unlock()
	if status == StatusDraining {
		return Info{}, errdefs.Userf(errdefs.ErrConflict, "pool %s is being deleted", name)
	}
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&cfg.MinIdle, u.MinIdle)
	set(&cfg.MaxIdle, u.MaxIdle)
	if u.MinIdle != nil && u.MaxIdle == nil && cfg.MaxIdle < cfg.MinIdle {
		cfg.MaxIdle = cfg.MinIdle // growing min_idle alone raises max_idle with it
	}
	set(&cfg.MaxTotal, u.MaxTotal)
	set(&cfg.MaxUses, u.MaxUses)
	setF(&cfg.MaxIdleTime, u.MaxIdleTime)
	if u.AcquirePolicy != nil {
		cfg.AcquirePolicy = *u.AcquirePolicy
	}
	setF(&cfg.AcquireTimeout, u.AcquireTimeout)
	setF(&cfg.HealthCheckTimeout, u.HealthCheckTimeout)
	set(&cfg.SessionTimeout, u.SessionTimeout)
	// No defaults here: the stored settings have them, and a value given
	// is meant (max_idle 0 keeps no idle sandbox).
	if err := cfg.Validate(); err != nil {
		return Info{}, err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return Info{}, err
	}
	if err := m.st.UpdatePool(ctx, name, string(b), status); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return Info{}, errdefs.Userf(errdefs.ErrConflict, "pool %s is being deleted", name)
		}
		return Info{}, err
	}
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	p.nudge()
	m.publish(p, status, "updated", "")
	return m.info(ctx, p)
}

func (m *Manager) publish(p *pool, status, reason, errMsg string) {
	m.events.Publish(events.Event{Type: "pool", Pool: p.name, Tenant: p.tenant, Status: status, Reason: reason, Error: errMsg})
}
