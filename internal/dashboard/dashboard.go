// Package dashboard serves sandpool's web console at /ui/: pages rendered
// on the server (html/template, embedded with their CSS and JavaScript)
// for the overview, sandboxes, a sandbox (status history, processes,
// files, terminal), pools, templates, keys, nodes and events. Live updates
// come from the events.Broker over server-sent events (live.go); the
// terminal is a WebSocket to a PTY (terminal.go).
//
// Signing in exchanges an API key for a session kept on the server
// (session.go): the browser holds only a random id in an HttpOnly,
// SameSite=Strict cookie; every change carries the session's CSRF token
// (csrf.go). Like the API, the dashboard calls the lifecycle service, the
// pool manager and the keys; it never reads the store or the runtime.
package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sandpool/sandpool/internal/cluster"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/loop"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Nodes is what the dashboard shows of the cluster (cluster.Cluster).
type Nodes interface {
	Self() string
	Nodes() []cluster.Node
}

// Config configures the dashboard. Zero values take the defaults.
type Config struct {
	// SessionTTL is how long a session lasts at most (default 8h);
	// IdleTimeout ends it sooner without a request (default 30m).
	SessionTTL  time.Duration
	IdleTimeout time.Duration
	// SweepEvery is how often sessions are checked for expiry and revoked
	// keys (default 2s): a revoked key's sessions end within it.
	SweepEvery time.Duration
	// MaxSessions bounds the sessions kept (default 10,000; the oldest
	// goes first).
	MaxSessions int
	// PageSize is how many sandboxes a page lists (default 1,000).
	PageSize int
	// Node is this node's name: actions on sandboxes of other nodes are
	// refused with a pointer there.
	Node string
	// Nodes, if set, lists the cluster's nodes.
	Nodes    Nodes
	Log      *slog.Logger
	Registry prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Minute
	}
	if c.SweepEvery == 0 {
		c.SweepEvery = 2 * time.Second
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 10000
	}
	if c.PageSize == 0 {
		c.PageSize = 1000
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	switch {
	case c.SessionTTL < time.Minute:
		return fmt.Errorf("dashboard session TTL %s: want at least 1m", c.SessionTTL)
	case c.IdleTimeout < time.Minute || c.IdleTimeout > c.SessionTTL:
		return fmt.Errorf("dashboard idle timeout %s: want 1m up to the session TTL (%s)", c.IdleTimeout, c.SessionTTL)
	case c.SweepEvery <= 0 || c.SweepEvery > time.Minute:
		return fmt.Errorf("dashboard sweep interval %s: want up to 1m", c.SweepEvery)
	case c.MaxSessions < 1:
		return fmt.Errorf("dashboard max sessions %d: want at least 1", c.MaxSessions)
	case c.PageSize < 1 || c.PageSize > 10000:
		return fmt.Errorf("dashboard page size %d: want 1 to 10000", c.PageSize)
	}
	return nil
}

// Server is the dashboard. It is an http.Handler for /ui/.
type Server struct {
	svc      *sandbox.Service
	pools    *pool.Manager
	keys     *keys.Keys
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	history  *history
	samples  *samples
	views    *templates
	assets   *assets
	handler  http.Handler

	ctx    context.Context // ends live streams and terminals at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	requests *prometheus.CounterVec
}

// New builds the dashboard on the lifecycle service, the pools and the
// keys, and starts its background work (the session sweep, the status
// history); Close stops it.
func New(svc *sandbox.Service, pools *pool.Manager, ks *keys.Keys, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	as, err := loadAssets()
	if err != nil {
		return nil, err
	}
	views, err := parseTemplates(as.url)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{svc: svc, pools: pools, keys: ks, cfg: cfg, log: cfg.Log,
		sessions: newSessions(ks, cfg.SessionTTL, cfg.IdleTimeout, cfg.MaxSessions),
		history:  newHistory(svc.Events()),
		samples:  newSamples(),
		views:    views, assets: as, ctx: ctx, cancel: cancel}
	f := promauto.With(cfg.Registry)
	s.requests = f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_ui_requests_total",
		Help: "Dashboard requests by route and status code."}, []string{"route", "code"})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "sandpool_ui_sessions",
		Help: "Signed-in dashboard sessions on this node."}, func() float64 { return float64(s.sessions.count()) })
	s.handler = s.routes()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.history.run(ctx)
	}()
	go func() {
		defer s.wg.Done()
		loop.Run(ctx, loop.Options{Name: "dashboard sessions", Every: cfg.SweepEvery, Log: s.log}, s.sessions.sweep)
	}()
	return s, nil
}

// ServeHTTP serves /ui/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close ends every session, live stream and terminal, and stops the
// background work. Call it before the HTTP server's Shutdown, which would
// otherwise wait for the streams.
func (s *Server) Close() {
	s.once.Do(func() {
		s.cancel()
		s.sessions.closeAll()
		s.wg.Wait()
	})
}
