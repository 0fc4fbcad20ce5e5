package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/leader"
	"github.com/sandpool/sandpool/internal/loop"
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
	CheckNetwork(ctx context.Context, template string, n *sandbox.Network) error
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
		// Pools made, changed or deleted through other nodes.
		loop.Run(m.ctx, loop.Options{Name: "pool sync", Every: time.Second, Timeout: 10 * time.Second, Log: m.opts.Log}, m.sync)
	})
	return nil
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
