package dashboard

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sandpool/sandpool/internal/httpstatus"
)

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
		securityHeaders(w.Header())
		s.fail(w, r, nil, errCSRF)
	}))
	return cop.Handler(mux)
}

// serve runs one route's checks and handler, and renders its error.
func (s *Server) serve(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &httpstatus.Recorder{ResponseWriter: w}
		defer func() { s.requests.WithLabelValues(rt.pattern, strconv.Itoa(rec.Status())).Inc() }()
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
	if rw, ok := w.(*httpstatus.Recorder); ok && rw.Code != 0 {
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
