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
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
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

// access says who may use a route.
type access int

const (
	public access = iota // anyone (sign-in, static files)
	user                 // a session
	admin                // a session of an admin key
)

// handler serves one route. It returns an error instead of writing one:
// serve renders it through statusFor.
type handler func(w http.ResponseWriter, r *http.Request, sess *session) error

// route is one dashboard endpoint.
type route struct {
	pattern string
	h       handler
	access  access
	// stream: a long-lived request (live updates, the terminal), which does
	// not count as activity of the session.
	stream bool
	// ownCSRF: the handler checks the CSRF token itself (an upload reads
	// it from the body's first part; the terminal from its first message).
	ownCSRF bool
}

func (s *Server) routeTable() []route {
	return []route{
		{pattern: "GET /ui/static/{file...}", h: s.static, access: public},
		{pattern: "GET /ui/signin", h: s.signInPage, access: public},
		{pattern: "POST /ui/signin", h: s.signIn, access: public},
		{pattern: "POST /ui/signout", h: s.signOut, access: user},

		{pattern: "GET /ui/{$}", h: s.overview, access: user},
		{pattern: "GET /ui/live", h: s.live, access: user, stream: true},
		{pattern: "GET /ui/events", h: s.eventsPage, access: user},

		{pattern: "GET /ui/sandboxes", h: s.sandboxesPage, access: user},
		{pattern: "GET /ui/sandboxes/{id}", h: s.sandboxPage, access: user},
		{pattern: "POST /ui/sandboxes/act", h: s.act, access: user},
		{pattern: "POST /ui/sandboxes/{id}/pause", h: s.pause, access: user},
		{pattern: "POST /ui/sandboxes/{id}/resume", h: s.resume, access: user},
		{pattern: "POST /ui/sandboxes/{id}/delete", h: s.deleteSandbox, access: user},
		{pattern: "POST /ui/sandboxes/{id}/processes/{proc}/kill", h: s.killProcess, access: user},
		{pattern: "GET /ui/sandboxes/{id}/files/download", h: s.download, access: user},
		{pattern: "POST /ui/sandboxes/{id}/files/upload", h: s.upload, access: user, ownCSRF: true},
		{pattern: "POST /ui/sandboxes/{id}/files/delete", h: s.deleteFile, access: user},
		{pattern: "GET /ui/sandboxes/{id}/terminal", h: s.terminal, access: user, stream: true, ownCSRF: true},

		{pattern: "GET /ui/pools", h: s.poolsPage, access: user},
		{pattern: "POST /ui/pools/{name}", h: s.updatePool, access: user},
		{pattern: "POST /ui/pools/{name}/drain", h: s.drainPool, access: user},

		{pattern: "GET /ui/templates", h: s.templatesPage, access: admin},
		{pattern: "GET /ui/keys", h: s.keysPage, access: admin},
		{pattern: "POST /ui/keys", h: s.createKey, access: admin},
		{pattern: "POST /ui/keys/{id}/revoke", h: s.revokeKey, access: admin},
		{pattern: "GET /ui/nodes", h: s.nodesPage, access: admin},
	}
}

// routes wires the table: cross-origin protection for every unsafe
// request (the sign-in form included), then per route the session, the
// admin check and the CSRF token.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		mux.Handle(rt.pattern, s.serve(rt))
	}
	mux.Handle("/ui/", s.serve(route{pattern: "/ui/", access: public, h: func(http.ResponseWriter, *http.Request, *session) error {
		return errNoRoute
	}}))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, nil, errCSRF)
	}))
	return cop.Handler(mux)
}

// serve runs one route's checks and handler, and renders its error.
func (s *Server) serve(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			s.requests.WithLabelValues(rt.pattern, strconv.Itoa(code)).Inc()
		}()
		securityHeaders(rec.Header())
		r = r.WithContext(context.WithValue(r.Context(), startKey{}, time.Now()))
		sess, err := s.check(rec, r, rt)
		if err == nil {
			err = rt.h(rec, r, sess)
		}
		if err != nil {
			s.fail(rec, r, sess, err)
		}
	})
}

// startKey holds when a request began: a page's live stream replays the
// events from then on, so none falls between the page and its stream.
type startKey struct{}

func requestStart(r *http.Request) time.Time {
	t, _ := r.Context().Value(startKey{}).(time.Time)
	return t
}

// check finds the request's session and applies the route's access rule
// and the CSRF check.
func (s *Server) check(w http.ResponseWriter, r *http.Request, rt route) (*session, error) {
	// Pages and actions count as use of the session; streams and static
	// files do not.
	sess, _ := s.sessions.get(cookieValue(r), rt.access != public && !rt.stream)
	if rt.access == public {
		return sess, nil
	}
	if sess == nil {
		return nil, errSignedOut
	}
	if rt.access == admin && !sess.admin {
		return sess, errAdmin
	}
	if !safeMethod(r.Method) && !rt.ownCSRF && !sess.checkCSRF(csrfToken(r)) {
		return sess, errCSRF
	}
	return sess, nil
}

// fail renders err: a page saying what went wrong and what to do, with
// the status statusFor picks. A signed-out browser asking for a page is
// sent to the sign-in page instead.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the browser went away
	}
	if rw, ok := w.(*statusRecorder); ok && rw.code != 0 {
		// Too late for a page: the response has begun (a download cut
		// short, a stream ended). The browser sees it cut off.
		s.log.Warn("dashboard response failed after it began", "path", r.URL.Path, "err", err)
		return
	}
	if errors.Is(err, errSignedOut) && r.Method == http.MethodGet && r.Header.Get("Accept") != "text/event-stream" {
		clearCookie(w, r)
		http.Redirect(w, r, "/ui/signin?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	status, title := statusFor(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "An unexpected error happened on the server; its log says more."
	}
	if errors.Is(err, errSignedOut) {
		clearCookie(w, r)
		sess = nil
	}
	s.render(w, r, status, "error", page{Title: title, Session: sess, Data: errorPage{Status: status, Title: title, Message: msg}})
}

// statusRecorder remembers the status code, for metrics and to know
// whether a response has begun.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (flushes, hijacking for the
// WebSocket) reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// securityHeaders keep the pages to themselves: scripts, styles, images
// and connections only from this server (no CDN, no inline script), never
// framed, no referrer sent elsewhere, nothing cached that holds a tenant's
// data.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", csp("'self'"))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// csp is the Content-Security-Policy with the style sources given. Pages
// allow only the dashboard's stylesheets; the page with the terminal also
// lets xterm.js add the <style> elements it sizes and colours the
// terminal with (scripts stay 'self' only).
func csp(styles string) string {
	return "default-src 'self'; script-src 'self'; style-src " + styles + "; img-src 'self' data:; " +
		"connect-src 'self'; font-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}
