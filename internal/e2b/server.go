// Package e2b serves the E2B API on sandpool, so that the published E2B
// SDKs (npm and PyPI "e2b") work against it unchanged: the control plane
// (/sandboxes, /v2/sandboxes: create, connect, list, pause, timeouts,
// metrics, kill), envd, the daemon the SDKs talk to inside a sandbox
// (Connect RPC process.Process and filesystem.Filesystem, /files, /health,
// served here on sandpool's own agent), and the sandboxes' ports. Requests
// for envd and ports are routed as E2B's proxy routes them: by the
// headers E2b-Sandbox-Id and E2b-Sandbox-Port, or by a host name
// <port>-<sandboxID>.<domain>.
//
// Like the native API it translates HTTP into calls on the lifecycle
// service, the pools and the keys, and maps errors in one table
// (errors.go).
package e2b

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/portproxy"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// EnvdVersion is the envd version sandpool speaks for: the SDKs switch
// features on by it (0.5.7: the default user, octet-stream and gzip
// uploads, closing stdin, recursive watches; not file metadata, 0.6.2).
const EnvdVersion = "0.5.7"

// EnvdPort is the port the SDKs reach envd on.
const EnvdPort = 49983

// DefaultDomain is the domain sandbox host names are under by default.
const DefaultDomain = "sandpool.localhost"

// Config configures a Server.
type Config struct {
	// Domain: sandbox ports are reached as <port>-<id>.<Domain>, and the
	// SDKs are told it (getHost). Default DefaultDomain.
	Domain string
	// Secret signs sandboxes' access tokens; every node must have the
	// same (the cluster secret). Required.
	Secret string
	// Cluster, if set, sends requests for sandboxes on other nodes there.
	Cluster  Cluster
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	if c.Secret == "" {
		return errors.New("e2b: a secret for access tokens is required")
	}
	if strings.ContainsAny(c.Domain, "/: ") {
		return fmt.Errorf("e2b: domain %q: want a DNS name", c.Domain)
	}
	return nil
}

// Server is the E2B front end. Make it with New; Close it.
type Server struct {
	svc   *sandbox.Service
	pools *pool.Manager
	keys  *keys.Keys
	cfg   Config
	log   *slog.Logger

	control  http.Handler // the control plane's routes
	envd     http.Handler // envd's routes, for a routed request
	ports    *portproxy.Proxy
	m        *metrics
	draining atomic.Bool
	fwd      forwarders
	acc      accountCache
	watchers watchers

	ctx    context.Context // ends background work (watchers) at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the E2B front end on the lifecycle service, the pools and the
// keys.
func New(svc *sandbox.Service, pools *pool.Manager, ks *keys.Keys, cfg Config) (*Server, error) {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{svc: svc, pools: pools, keys: ks, cfg: cfg, log: cfg.Log, m: newMetrics(cfg.Registry), ctx: ctx, cancel: cancel}
	s.control = s.controlRoutes()
	s.envd = s.envdRoutes()
	s.ports = portproxy.New(portproxy.Options{
		// Credentials for sandpool and routing stay out of the sandbox.
		StripHeaders: []string{"X-Access-Token", "E2B-Traffic-Access-Token", "X-API-KEY", "E2b-Sandbox-Id", "E2b-Sandbox-Port"},
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			s.writeEnvdError(w, r, fmt.Errorf("%w: the server on the port failed: %v", errGone, err))
		},
	})
	s.wg.Add(1)
	go s.expireWatchers()
	return s, nil
}

// Drain makes new E2B requests fail with 503 while those under way finish
// (sandpool serve is stopping).
func (s *Server) Drain() { s.draining.Store(true) }

// Close ends background work (polled watchers).
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
	s.watchers.closeAll()
}

// Handler serves, in front of next: requests for a sandbox's envd or
// ports (routing headers, or a sandbox host name), then the E2B control
// plane (/sandboxes..., /v2/sandboxes...); everything else goes to next.
func (s *Server) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, port, routed, err := s.route(r); routed {
			surface, route := "envd", envdRoute
			if port != EnvdPort {
				surface, route = "port", func(*http.Request) string { return "port" }
			}
			s.observe(w, r, surface, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case err != nil:
					s.writeEnvdError(w, r, err)
				case s.draining.Load():
					s.writeEnvdError(w, r, errShuttingDown)
				default:
					s.serveSandbox(w, r, id, port)
				}
			}), route)
			return
		}
		if isControlPath(r.URL.Path) {
			s.observe(w, r, "api", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if s.draining.Load() {
					s.writeAPIError(w, r, errShuttingDown)
					return
				}
				s.control.ServeHTTP(w, r)
			}), controlRoute)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isControlPath reports whether p is a route of the E2B control plane.
func isControlPath(p string) bool {
	for _, prefix := range []string{"/sandboxes", "/v2/sandboxes"} {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	return false
}
