// Package api serves sandpool's HTTP API (/v1, described by
// api/openapi.yaml), plus /metrics, /healthz and /readyz.
package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/httpstatus"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/portproxy"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Config configures a Server.
type Config struct {
	// MaxUploadBytes bounds a file upload; 0 means 64 GiB.
	MaxUploadBytes int64
	// MaxOutputBytes bounds each of stdout and stderr in a buffered exec
	// reply; 0 means 16 MiB. Streams are not bounded.
	MaxOutputBytes int
	// Cluster, if set, forwards requests for sandboxes on other nodes.
	Cluster  Cluster
	Log      *slog.Logger
	Registry *prometheus.Registry
}

// Server is the HTTP API.
type Server struct {
	svc       *sandbox.Service
	pools     *pool.Manager
	keys      *keys.Keys
	idem      *idempotency.Records
	cluster   Cluster
	fwd       forwarders
	ports     *portproxy.Proxy
	cfg       Config
	log       *slog.Logger
	handler   http.Handler
	draining  atomic.Bool
	drained   chan struct{} // closed by Drain: ends event streams
	drainOnce sync.Once

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the API on the lifecycle service, the pools, the keys and the
// idempotency records.
func New(svc *sandbox.Service, pools *pool.Manager, ks *keys.Keys, idem *idempotency.Records, cfg Config) *Server {
	if cfg.MaxUploadBytes == 0 {
		cfg.MaxUploadBytes = 64 << 30
	}
	if cfg.MaxOutputBytes == 0 {
		cfg.MaxOutputBytes = 16 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	f := promauto.With(cfg.Registry)
	s := &Server{svc: svc, pools: pools, keys: ks, idem: idem, cluster: cfg.Cluster, cfg: cfg, log: cfg.Log, drained: make(chan struct{}),
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{Name: "sandpool_http_request_duration_seconds",
			Help: "HTTP request latency by route (streams until their end).", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 18)},
			[]string{"route"}),
	}
	s.ports = s.newPortProxy()
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		h := rt.h
		if strings.Contains(rt.pattern, "/v1/sandboxes/{id}") && !strings.Contains(rt.pattern, "/internal/") {
			h = s.forwarded(h)
		}
		if !rt.public {
			h = s.authenticated(h, rt.admin)
		}
		mux.Handle(rt.pattern, s.instrument(h))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	s.handler = mux
	return s
}

// route is one API endpoint.
type route struct {
	pattern string
	h       http.HandlerFunc
	public  bool // no API key needed
	admin   bool // admin key needed
}

// routes is the API, in one place (the OpenAPI test reads it).
func (s *Server) routes() []route {
	return []route{
		{pattern: "GET /healthz", h: s.healthz, public: true},
		{pattern: "GET /readyz", h: s.readyz, public: true},

		{pattern: "POST /v1/sandboxes", h: s.createSandbox},
		{pattern: "GET /v1/sandboxes", h: s.listSandboxes},
		{pattern: "GET /v1/sandboxes/{id}", h: s.getSandbox},
		{pattern: "DELETE /v1/sandboxes/{id}", h: s.deleteSandbox},
		{pattern: "POST /v1/sandboxes/{id}/ping", h: s.ping},
		{pattern: "POST /v1/sandboxes/{id}/release", h: s.release},
		{pattern: "POST /v1/sandboxes/{id}/pause", h: s.pause},
		{pattern: "POST /v1/sandboxes/{id}/resume", h: s.resume},
		{pattern: "POST /v1/sandboxes/{id}/timeout", h: s.setTimeout},
		{pattern: "GET /v1/sandboxes/{id}/network", h: s.getNetwork},
		{pattern: "PUT /v1/sandboxes/{id}/network", h: s.setNetwork},

		{pattern: "POST /v1/pools", h: s.createPool},
		{pattern: "GET /v1/pools", h: s.listPools},
		{pattern: "GET /v1/pools/{name}", h: s.getPool},
		{pattern: "PATCH /v1/pools/{name}", h: s.updatePool},
		{pattern: "DELETE /v1/pools/{name}", h: s.deletePool},
		{pattern: "POST /v1/pools/{name}/acquire", h: s.acquire},

		{pattern: "POST /v1/sandboxes/{id}/exec", h: s.exec},
		{pattern: "POST /v1/sandboxes/{id}/processes", h: s.startProcess},
		{pattern: "GET /v1/sandboxes/{id}/processes", h: s.listProcesses},
		{pattern: "DELETE /v1/sandboxes/{id}/processes", h: s.killAll},
		{pattern: "GET /v1/sandboxes/{id}/processes/{proc}/output", h: s.attach},
		{pattern: "POST /v1/sandboxes/{id}/processes/{proc}/stdin", h: s.stdin},
		{pattern: "POST /v1/sandboxes/{id}/processes/{proc}/signal", h: s.signal},
		{pattern: "POST /v1/sandboxes/{id}/processes/{proc}/resize", h: s.resize},
		{pattern: "GET /v1/sandboxes/{id}/metrics", h: s.metrics},
		{pattern: "GET /v1/sandboxes/{id}/files/watch", h: s.watchFiles},
		{pattern: "GET /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},
		{pattern: "POST /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},
		{pattern: "PUT /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},
		{pattern: "PATCH /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},
		{pattern: "DELETE /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},
		{pattern: "OPTIONS /v1/sandboxes/{id}/ports/{port}/{path...}", h: s.port},

		{pattern: "GET /v1/sandboxes/{id}/files", h: s.readFile},
		{pattern: "PUT /v1/sandboxes/{id}/files", h: s.writeFile},
		{pattern: "DELETE /v1/sandboxes/{id}/files", h: s.removeFile},
		{pattern: "GET /v1/sandboxes/{id}/files/list", h: s.listFiles},
		{pattern: "GET /v1/sandboxes/{id}/files/stat", h: s.statFile},
		{pattern: "POST /v1/sandboxes/{id}/files/mkdir", h: s.mkdir},
		{pattern: "POST /v1/sandboxes/{id}/files/rename", h: s.rename},

		{pattern: "GET /v1/templates", h: s.listTemplates},
		{pattern: "POST /v1/templates", h: s.createTemplate, admin: true},
		{pattern: "PUT /v1/templates/{name}", h: s.uploadTemplate, admin: true},
		{pattern: "DELETE /v1/templates/{name}", h: s.deleteTemplate, admin: true},
		{pattern: "POST /v1/templates/{name}/build", h: s.buildTemplate, admin: true},

		{pattern: "POST /v1/keys", h: s.createKey, admin: true},
		{pattern: "GET /v1/keys", h: s.listKeys, admin: true},
		{pattern: "DELETE /v1/keys/{id}", h: s.revokeKey, admin: true},

		{pattern: "GET /v1/events", h: s.events},
		{pattern: "GET /v1/node", h: s.node, admin: true},

		{pattern: "POST /v1/internal/sandboxes/{id}/ping", h: s.internalPing, admin: true},
		{pattern: "POST /v1/internal/sandboxes/{id}/retire", h: s.internalRetire, admin: true},
		{pattern: "POST /v1/internal/sandboxes/{id}/destroy", h: s.internalDestroy, admin: true},
	}
}

// Routes lists "METHOD /path" for every API route (for the OpenAPI test).
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.routes() {
		out = append(out, r.pattern)
	}
	return out
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Drain makes new requests fail with 503 and /readyz report not ready,
// while in-flight ones finish; event streams end at once, since they would
// never finish by themselves.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.drainOnce.Do(func() { close(s.drained) })
}

func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			s.writeError(w, r, sandbox.ErrShuttingDown)
			return
		}
		if r.URL.Query().Get("auto_resume") == "false" {
			r = r.WithContext(sandbox.WithoutAutoResume(r.Context()))
		}
		start := time.Now()
		rec := &httpstatus.Recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		s.requests.WithLabelValues(r.Pattern, strconv.Itoa(rec.Status())).Inc()
		s.latency.WithLabelValues(r.Pattern).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// maxJSON bounds a JSON request body.
const maxJSON = 1 << 20

// decode reads a JSON body strictly: unknown fields, trailing data and
// bodies over maxJSON are refused.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSON))
	if err != nil {
		return err
	}
	return decodeBytes(body, v)
}

// decodeOptional is decode for a body that may be absent or empty.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSON))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeBytes(body, v)
}

func decodeBytes(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: request body: data after the JSON value", errBadRequest)
	}
	return nil
}

func (s *Server) node(w http.ResponseWriter, r *http.Request) {
	in, err := s.svc.Node(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}
