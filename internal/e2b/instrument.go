package e2b

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sandpool/sandpool/internal/httpstatus"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_e2b_requests_total",
			Help: "Requests to the E2B API by surface (api, envd, port), route and status code."}, []string{"surface", "route", "code"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{Name: "sandpool_e2b_request_duration_seconds",
			Help: "E2B API latency by surface and route (streams until their end).", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 18)},
			[]string{"surface", "route"}),
	}
}

// observe serves r with h and counts it under surface and the route
// route(r) names once h has run (never a sandbox id: few label values).
func (s *Server) observe(w http.ResponseWriter, r *http.Request, surface string, h http.Handler, route func(*http.Request) string) {
	start := time.Now()
	rec := &httpstatus.Recorder{ResponseWriter: w}
	h.ServeHTTP(rec, r)
	name := route(r)
	s.m.requests.WithLabelValues(surface, name, strconv.Itoa(rec.Status())).Inc()
	s.m.latency.WithLabelValues(surface, name).Observe(time.Since(start).Seconds())
}

// envdRoute names an envd request's route: an RPC, /files or /health.
func envdRoute(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/process.Process/"), strings.HasPrefix(p, "/filesystem.Filesystem/"):
		if i := strings.LastIndexByte(p, '/'); i > 0 && len(p)-i <= 32 && !strings.ContainsAny(p[i+1:], "./") {
			return p
		}
	case p == "/files", p == "/health":
		return r.Method + " " + p
	}
	return "other"
}

// controlRoute names a control-plane request's route: its pattern.
func controlRoute(r *http.Request) string {
	if r.Pattern == "" {
		return "other"
	}
	return r.Pattern
}
