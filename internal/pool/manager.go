package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/leader"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

// ErrEmpty: no healthy idle sandbox, and the policy did not make one.
var ErrEmpty = errdefs.New(errdefs.ErrExhausted, "pool_empty", "pool empty")

// Store is what pools need of the store: their own records, and leases.
// A pool's sandboxes are the lifecycle service's (Sandboxes).
type Store interface {
	CreatePool(ctx context.Context, p store.Pool) error
	GetPool(ctx context.Context, name string) (store.Pool, error)
	ListPools(ctx context.Context) ([]store.Pool, error)
	UpdatePool(ctx context.Context, name, config, status string) error
	DeletePool(ctx context.Context, name string) error
	leader.Leases
}

// Sandboxes is what pools need of the lifecycle service, which alone
// decides and records a sandbox's status.
type Sandboxes interface {
	// CreateForPool makes a sandbox of a pool: idle, or in use by a caller.
	CreateForPool(ctx context.Context, p sandbox.PoolSandbox) (sandbox.Sandbox, error)
	// TakeIdle takes the longest-idle sandbox of pool (on node, if set)
	// for a session, atomically; errdefs.ErrNotFound if none is idle.
	TakeIdle(ctx context.Context, pool, node string, sessionTimeout int) (sandbox.Sandbox, error)
	// Handed records that the caller keeps a sandbox it took.
	Handed(sb sandbox.Sandbox)
	HealthCheck(ctx context.Context, id string, timeout time.Duration) error
	// BeginRelease ends a caller's session (one release wins); Recycle
	// then makes the sandbox idle again, or destroys it if that fails.
	BeginRelease(ctx context.Context, tenant, id string) (sandbox.Sandbox, error)
	Recycle(ctx context.Context, id string) error
	DestroyPooled(ctx context.Context, id, reason string) error
	// RetireIdle destroys an idle sandbox unless it was taken meanwhile.
	RetireIdle(ctx context.Context, id, reason string) (bool, error)
	PoolCounts(ctx context.Context, pool string) (sandbox.PoolCounts, error)
	// Idle lists a pool's idle sandboxes (on node, if set), longest idle
	// first.
	Idle(ctx context.Context, pool, node string) ([]sandbox.Sandbox, error)
	// Resetting lists this node's sandboxes whose reset a crash cut short.
	Resetting(ctx context.Context) ([]sandbox.Sandbox, error)
	CheckTemplate(ctx context.Context, template string, limits sandbox.Limits) error
}

// Remote reaches the node a pool's sandbox lives on, when it is not this
// one.
type Remote interface {
	Call(ctx context.Context, node, tenant, method, path string) error
}

// Options configure a Manager.
type Options struct {
	// Node is this node's name: only its own sandboxes are handed out here.
	Node string
	// Tick is how often each pool is replenished without being woken
	// (default 250ms).
	Tick time.Duration
	// DrainTimeout bounds how long a delete waits for in-flight acquires
	// and releases (default 30s).
	DrainTimeout time.Duration
	// MaxParallelCreates per pool and tick (default 4).
	MaxParallelCreates int
	// LeaseTTL is how long a pool leader's lease lasts unrenewed (default
	// 10s); only the leader of a pool fills and sheds it.
	LeaseTTL time.Duration
	// Remote reaches other nodes (nil: this node is alone).
	Remote   Remote
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Manager runs every pool of this node.
type Manager struct {
	svc    Sandboxes
	st     Store
	events *events.Broker
	opts   Options
	m      *metrics

	ctx    context.Context // ends when the manager closes
	cancel context.CancelFunc
	bgMu   sync.Mutex // guards closed and the start of background work
	closed bool
	bg     sync.WaitGroup // loops and recycles

	mu     sync.Mutex
	pools  map[string]*pool
	syncMu sync.Mutex // one sync at a time
}

// NewManager makes a manager; Start loads the pools.
func NewManager(svc Sandboxes, st Store, ev *events.Broker, opts Options) *Manager {
	if opts.Tick == 0 {
		opts.Tick = 250 * time.Millisecond
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.MaxParallelCreates == 0 {
		opts.MaxParallelCreates = 4
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{svc: svc, st: st, events: ev, opts: opts, m: newMetrics(opts.Registry),
		ctx: ctx, cancel: cancel, pools: map[string]*pool{}}
}

// pool is one pool's live state on this node.
type pool struct {
	name   string
	tenant string

	mu       sync.Mutex
	cfg      Config
	status   string
	lastErr  string
	failures int       // consecutive failed creates
	retryAt  time.Time // no creates before (backoff)
	reserved int       // creates under way (counted against max_total)
	readyCh  chan struct{}

	// decide serialises the decisions that add idle sandboxes (replenish
	// creates, releases that recycle), so that together they never pass
	// max_idle. It is held across one count in the store; claims (under
	// decide) are idle sandboxes being created and not yet counted there.
	decide sync.Mutex
	claims int

	createdAt time.Time     // of the pool's record: tells a re-made pool of the same name
	updateMu  sync.Mutex    // one Update at a time
	wake      chan struct{} // nudges the replenish loop
	leading   atomic.Bool   // this node holds the pool's lease
	inflight  tracker       // acquires and releases under way
	stop      context.CancelFunc
	done      chan struct{}
}

func (p *pool) config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// nudge wakes the replenish loop without blocking.
func (p *pool) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// readied tells waiting acquires that a sandbox may be idle now.
func (p *pool) readied() {
	p.mu.Lock()
	close(p.readyCh)
	p.readyCh = make(chan struct{})
	p.mu.Unlock()
}

func (p *pool) readyChan() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readyCh
}

// Start loads the pools from the store, finishes resets a crash cut short,
// and starts every pool's replenish loop.
func (m *Manager) Start(ctx context.Context) error {
	rows, err := m.st.ListPools(ctx)
	if err != nil {
		return err
	}
	// Resets a crash cut short, of pools deleted meanwhile: their
	// sandboxes go (a reset of a live pool's is finished below).
	known := map[string]bool{}
	for _, r := range rows {
		known[r.Name] = true
	}
	resetting, err := m.svc.Resetting(ctx)
	if err != nil {
		return err
	}
	for _, sb := range resetting {
		if sb.Pool != "" && !known[sb.Pool] {
			if err := m.svc.DestroyPooled(ctx, sb.ID, "drain"); err != nil {
				m.opts.Log.Error("destroy a reset sandbox of a deleted pool", "sandbox", sb.ID, "err", err)
			}
		}
	}
	for _, row := range rows {
		var cfg Config
		if err := json.Unmarshal([]byte(row.Config), &cfg); err != nil {
			return fmt.Errorf("pool %s: config: %w", row.Name, err)
		}
		p := m.add(row.Name, row.Tenant, cfg, row.Status, row.CreatedAt)
		if row.Status == StatusDraining {
			// A delete was cut short: finish it.
			m.goBG(func() {
				if err := m.drain(m.ctx, p); err != nil {
					m.opts.Log.Error("finish draining pool", "pool", p.name, "err", err)
				}
			})
		}
		for _, sb := range resetting {
			if sb.Pool == row.Name {
				m.recycle(p, sb)
			}
		}
	}
	m.goBG(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
			}
			sctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			if err := m.sync(sctx); err != nil && m.ctx.Err() == nil {
				m.opts.Log.Warn("sync pools from the store", "err", err)
			}
			cancel()
		}
	})
	return nil
}

// retireIdle destroys an idle sandbox of p for reason, on whichever node it
// lives, unless it was handed out meanwhile.
func (m *Manager) retireIdle(ctx context.Context, p *pool, sb sandbox.Sandbox, reason string) (bool, error) {
	if sb.NodeName == m.opts.Node || m.opts.Remote == nil {
		return m.svc.RetireIdle(ctx, sb.ID, reason)
	}
	err := m.opts.Remote.Call(ctx, sb.NodeName, p.tenant, "POST", "/v1/internal/sandboxes/"+sb.ID+"/retire?reason="+url.QueryEscape(reason))
	return err == nil, err
}

// Close stops every loop and waits for background work. Sandboxes stay.
func (m *Manager) Close() {
	m.bgMu.Lock()
	m.closed = true
	m.bgMu.Unlock()
	m.cancel()
	m.bg.Wait()
}

// goBG runs f in the background unless the manager is closing (then it
// runs f at once: it is work that must be done, such as a reset).
func (m *Manager) goBG(f func()) {
	m.bgMu.Lock()
	if m.closed {
		m.bgMu.Unlock()
		f()
		return
	}
	m.bg.Add(1)
	m.bgMu.Unlock()
	go func() {
		defer m.bg.Done()
		f()
	}()
}

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
			(p.status == StatusDraining && row.Status != StatusDraining)) {
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

func (m *Manager) publish(p *pool, status, reason, errMsg string) {
	m.events.Publish(events.Event{Type: "pool", Pool: p.name, Tenant: p.tenant, Status: status, Reason: reason, Error: errMsg})
}
