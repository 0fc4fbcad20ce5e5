package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sandpool/sandpool/internal/events"
)

// Live updates: a page that changes says so with data-live on its <main>
// (page.Live); app.js opens an EventSource on /ui/live with that query and
// applies the patches it receives. The stream is fed by the events.Broker
// (the same transitions GET /v1/events serves), filtered to the session's
// tenant; nothing polls. What one event changes (a sandbox's row, a line
// of history) is sent at once; what counts many (summaries, pool counts,
// the overview) is re-rendered at most every coalesceEvery.

// patch is one change to a page, applied by app.js.
type patch struct {
	// Op is upsert (replace the element, or add it to Parent), replace
	// (only if it is there), remove, prepend (add it first in Parent), or
	// stale (events were lost: the page offers a reload).
	Op     string `json:"op"`
	ID     string `json:"id,omitempty"`
	Parent string `json:"parent,omitempty"`
	HTML   string `json:"html,omitempty"`
}

// view is what a page does with events.
type view interface {
	// event returns the patches for one event, and whether the coalesced
	// refresh is due.
	event(ctx context.Context, e events.Event) ([]patch, bool, error)
	// refresh re-renders what many events change together.
	refresh(ctx context.Context) ([]patch, error)
}

const (
	coalesceEvery  = 250 * time.Millisecond
	keepaliveEvery = 15 * time.Second
	viewTimeout    = 10 * time.Second // bounds each event's or refresh's work
)

// slow is a view whose refresh costs more (the overview measures the
// node), and so is coalesced over longer.
type slow interface{ coalesceEvery() time.Duration }

// ticking is a view that also changes without events (measurements).
type ticking interface {
	every() time.Duration
	tick(ctx context.Context) ([]patch, error)
}

// visible reports whether a session may see an event: its own tenant's,
// and for admins the cluster's (nodes going down).
func visible(sess *session, e events.Event) bool {
	return e.Tenant == sess.tenant || (sess.admin && e.Type == "node" && e.Tenant == "")
}

func (s *Server) newView(r *http.Request, sess *session) (view, error) {
	q := r.URL.Query()
	switch q.Get("view") {
	case "overview":
		return &overviewView{s: s, sess: sess}, nil
	case "sandboxes":
		f, err := parseFilter(q)
		if err != nil {
			return nil, err
		}
		return &sandboxesView{s: s, sess: sess, f: f, append: q.Get("append") == "1"}, nil
	case "sandbox":
		return s.newSandboxView(r.Context(), sess, q.Get("id"), q.Get("path"))
	case "pools":
		return s.newPoolsView(r.Context(), sess)
	case "events":
		return &eventsView{s: s, sess: sess}, nil
	}
	return nil, fmt.Errorf("%w: unknown live view %q", errBadForm, q.Get("view"))
}

// live streams a page's patches as server-sent events until the browser
// leaves, the session ends (it is told, and goes to the sign-in page) or
// the server stops.
func (s *Server) live(w http.ResponseWriter, r *http.Request, sess *session) error {
	v, err := s.newView(r, sess)
	if err != nil {
		return err
	}
	keep := func(e events.Event) bool { return visible(sess, e) }
	sub := s.svc.Events().Subscribe(1024, keep)
	defer sub.Close()
	// What happened between the page's rendering and this stream: replayed
	// from the history (events come on sub from now on; one seen twice
	// does no harm).
	var missed []events.Event
	complete := true
	if ns, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64); err == nil {
		missed, complete = s.history.since(time.Unix(0, ns), keep)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no") // proxies: pass each event on at once
	w.WriteHeader(http.StatusOK)
	ls := &liveStream{s: s, r: r, w: w, rc: http.NewResponseController(w), v: v}
	if !ls.comment("sandpool live") || (!complete && !ls.send("patch", []patch{{Op: "stale"}})) {
		return nil
	}
	for _, e := range missed {
		if !ls.handle(e) {
			return nil
		}
	}
	if ls.due == nil {
		ls.due = time.After(0) // counts may have changed before the history began
	}
	keepalive := time.NewTicker(keepaliveEvery)
	defer keepalive.Stop()
	var ticks <-chan time.Time
	if tv, ok := v.(ticking); ok {
		t := time.NewTicker(tv.every())
		defer t.Stop()
		ticks = t.C
	}
	for ok := true; ok; {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.ctx.Done():
			return nil
		case <-sess.Done():
			ls.send("signedout", nil)
			return nil
		case <-keepalive.C:
			ok = ls.comment("keepalive")
		case e := <-sub.C:
			ok = (sub.Dropped() == 0 || ls.send("patch", []patch{{Op: "stale"}})) && ls.handle(e)
		case <-ls.due:
			ls.due = nil
			ok = ls.work(v.refresh)
		case <-ticks:
			ok = ls.work(v.(ticking).tick)
		}
	}
	return nil // the browser is gone
}

// liveStream is one page's stream: it runs the view's work and sends the
// patches. Its methods report false once the browser cannot be written to.
type liveStream struct {
	s   *Server
	r   *http.Request
	w   http.ResponseWriter
	rc  *http.ResponseController
	v   view
	due <-chan time.Time // the coalesced refresh, when one is due
}

func (ls *liveStream) comment(text string) bool {
	if _, err := fmt.Fprintf(ls.w, ": %s\n\n", text); err != nil {
		return false
	}
	return ls.rc.Flush() == nil
}

func (ls *liveStream) send(event string, ps []patch) bool {
	if len(ps) == 0 && event == "patch" {
		return true
	}
	b, err := json.Marshal(ps)
	if err != nil {
		return false
	}
	if _, err := fmt.Fprintf(ls.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return false
	}
	return ls.rc.Flush() == nil
}

// work runs a view's work under its own deadline and sends its patches; a
// failure is logged, and the stream goes on (the next event may do
// better).
func (ls *liveStream) work(f func(context.Context) ([]patch, error)) bool {
	ctx, cancel := context.WithTimeout(ls.r.Context(), viewTimeout)
	defer cancel()
	ps, err := f(ctx)
	if err != nil {
		ls.s.log.Warn("dashboard live update failed", "err", err)
		return true
	}
	return ls.send("patch", ps)
}

// handle applies one event, and schedules the view's refresh if it asks.
func (ls *liveStream) handle(e events.Event) bool {
	dirty := false
	ok := ls.work(func(ctx context.Context) ([]patch, error) {
		ps, d, err := ls.v.event(ctx, e)
		dirty = d
		return ps, err
	})
	if dirty && ls.due == nil {
		every := coalesceEvery
		if sv, ok := ls.v.(slow); ok {
			every = sv.coalesceEvery()
		}
		ls.due = time.After(every)
	}
	return ok
}

// one renders a fragment into a single patch.
func (s *Server) one(op, id, parent, fragment string, data any) ([]patch, error) {
	html, err := s.fragment(fragment, data)
	if err != nil {
		return nil, err
	}
	return []patch{{Op: op, ID: id, Parent: parent, HTML: html}}, nil
}
