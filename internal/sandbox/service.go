// Package sandbox is the lifecycle service: it owns each sandbox's status,
// writes every transition to the store before acting on it, drives the
// runtime, publishes events, and tells the two kinds of failure apart — a
// sandbox state error retires the sandbox, a user error is returned and the
// sandbox lives on.
package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/image"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/store"
)

const (
	StatusCreating  Status = "creating"
	StatusReady     Status = "ready"     // idle in a pool, its session set up
	StatusRunning   Status = "running"   // in use: created directly or acquired from a pool
	StatusResetting Status = "resetting" // released to its pool, being reset
	StatusPaused    Status = "paused"
	StatusStopping  Status = "stopping"
	StatusStopped   Status = "stopped"
	StatusFailed    Status = "failed"
	// StatusLost: its node stopped answering; what it had is gone.
	StatusLost Status = "lost"
)

// Store is what the service needs of the store.
type Store interface {
	CreateSandbox(ctx context.Context, sb store.Sandbox) error
	GetSandbox(ctx context.Context, id string) (store.Sandbox, error)
	ListSandboxes(ctx context.Context, f store.Filter) ([]store.Sandbox, error)
	CountSandboxes(ctx context.Context, f store.Filter) (int, error)
	SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error
	UpdateSandbox(ctx context.Context, id string, from []string, u store.Update) error
	TouchSandboxes(ctx context.Context, active map[string]time.Time) error
	TakeIdle(ctx context.Context, t store.Take) (store.Sandbox, error)
	CountByStatus(ctx context.Context, f store.Filter) (map[string]int, error)
	MarkNodeLost(ctx context.Context, node string, before time.Time, active []string, lost, errMsg string) ([]store.Sandbox, bool, error)

	CreateTemplate(ctx context.Context, t store.Template) error
	GetTemplate(ctx context.Context, name string) (store.Template, error)
	ListTemplates(ctx context.Context) ([]store.Template, error)
	DeleteTemplate(ctx context.Context, name string) error
}

// Config configures a Service.
type Config struct {
	// Node names this process in the store; sandboxes belong to the node
	// that started them.
	Node string
	// MaxSandboxes caps active sandboxes on this node; 0 means 1000.
	MaxSandboxes int
	// ReapInterval is how often idle sandboxes are looked for; 0 means 1s.
	ReapInterval time.Duration
	// ReconcileInterval is how often the runtime and the store are
	// compared; 0 means 5s.
	ReconcileInterval time.Duration
	// ArchiveAfter is how long a paused sandbox stays frozen before it is
	// archived, unless it says otherwise; 0 means 10 minutes.
	ArchiveAfter time.Duration
	// DefaultNetwork is the egress policy of sandboxes (and pools) whose
	// request names none; the zero value is egress none.
	DefaultNetwork Network
	Log            *slog.Logger
	Registry       prometheus.Registerer
	// Images is the layer store of templates made from images and
	// Dockerfiles; nil means none can be made.
	Images *image.Store
	// MaxTemplateBytes bounds a template made from an image or a
	// Dockerfile: the image's layers, compressed and unpacked; 0 means
	// image.DefaultMaxBytes.
	MaxTemplateBytes int64
	// GPUHost is the node's GPUs that sandboxes may be given (what
	// gpu.Discover found, less what --gpus leaves out), with the driver's
	// nodes and files; the zero value: none. GPUSharing lets several
	// sandboxes hold one GPU.
	GPUHost    gpu.Host
	GPUSharing bool
}

// Service is the lifecycle service.
type Service struct {
	rt     runtime.Runtime
	st     Store
	events *events.Broker
	cfg    Config

	admitMu sync.Mutex // serialises capacity check and row write

	tplMu    sync.Mutex
	tplCache map[string]resolved
	adding   map[string]bool // image templates being made (under tplMu)
	users    []TemplateUsers // who else may use a template (under tplMu)
	// imgMu: a template's image record is committed and its runtime
	// template placed under the read lock; an image GC works under the
	// write lock, so it never sees a record whose template is not there
	// yet.
	imgMu sync.RWMutex

	locks keyedMutex // one pause, resume, archive or reconcile of a sandbox at a time
	m     *metrics
	gpus  *gpu.Set // who holds which GPU (gpus.go); taken and written under admitMu

	mu       sync.Mutex
	activity map[string]*activity
	streams  map[string]int // open process streams, by sandbox
	closing  bool
	bg       sync.WaitGroup // retirements and the reaper
	stop     context.CancelFunc
}

// New makes a service. Call Start to recover state and start the reaper.
func New(rt runtime.Runtime, st Store, ev *events.Broker, cfg Config) *Service {
	if cfg.MaxSandboxes == 0 {
		cfg.MaxSandboxes = 1000
	}
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = time.Second
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Second
	}
	if cfg.ArchiveAfter == 0 {
		cfg.ArchiveAfter = 10 * time.Minute
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{rt: rt, st: st, events: ev, cfg: cfg, activity: map[string]*activity{}, streams: map[string]int{}, tplCache: map[string]resolved{}, adding: map[string]bool{},
		m: newMetrics(cfg.Registry), gpus: gpu.NewSet(cfg.GPUHost.GPUs, cfg.GPUSharing)}
	cfg.Registry.MustRegister(newNodeCollector(s))
	return s
}

// Events is the broker transitions are published on.
func (s *Service) Events() *events.Broker { return s.events }

func (s *Service) publish(sb store.Sandbox, status Status, reason, errMsg string) {
	s.events.Publish(events.Event{Type: "sandbox", Sandbox: sb.ID, Tenant: sb.Tenant, Status: string(status), Reason: reason, Error: errMsg})
}

// transition writes a status change to the store, then publishes it.
func (s *Service) transition(ctx context.Context, sb store.Sandbox, from []Status, to Status, reason, errMsg string) error {
	fromS := make([]string, len(from))
	for i, f := range from {
		fromS[i] = string(f)
	}
	if err := s.st.SetStatus(ctx, sb.ID, fromS, string(to), errMsg); err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			return errdefs.Userf(errdefs.ErrConflict, "%v", err)
		}
		return err
	}
	s.publish(sb, to, reason, errMsg)
	return nil
}

// Close stops the reaper and waits for background work. Sandboxes keep
// running.
func (s *Service) Close() {
	s.mu.Lock()
	s.closing = true
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.bg.Wait()
}
