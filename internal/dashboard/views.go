package dashboard

import (
	"context"
	"errors"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
)

// The live views, one per page that changes (see live.go).

// overviewView re-renders the overview's counts after events.
type overviewView struct {
	s    *Server
	sess *session
}

func (v *overviewView) event(context.Context, events.Event) ([]patch, bool, error) {
	return nil, true, nil
}

// coalesceEvery: the overview counts every sandbox of the tenant, and
// for admins measures the node's memory.
func (v *overviewView) coalesceEvery() time.Duration { return time.Second }

func (v *overviewView) refresh(ctx context.Context) ([]patch, error) {
	d, err := v.s.overviewBody(ctx, v.sess)
	if err != nil {
		return nil, err
	}
	return v.s.one("replace", "overview-body", "", "overview-body", d)
}

// sandboxesView keeps the list's rows and summary current: a sandbox that
// changes is re-rendered, one that leaves the filter is removed, a new one
// joins the last page.
type sandboxesView struct {
	s      *Server
	sess   *session
	f      sbFilter
	append bool
}

func (v *sandboxesView) event(ctx context.Context, e events.Event) ([]patch, bool, error) {
	if e.Type != "sandbox" || e.Sandbox == "" {
		return nil, false, nil
	}
	id := "sb-" + e.Sandbox
	sb, err := v.s.svc.Get(ctx, v.sess.tenant, e.Sandbox)
	if errors.Is(err, errdefs.ErrNotFound) {
		return []patch{{Op: "remove", ID: id}}, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !v.f.match(sb) {
		return []patch{{Op: "remove", ID: id}}, true, nil
	}
	op, parent := "replace", ""
	if v.append {
		op, parent = "upsert", "sb-rows"
	}
	return []patch{{Op: op, ID: id, Parent: parent, HTML: string(sandboxRow(sbRow{SB: sb, Here: v.s.cfg.Node}))}}, true, nil
}

func (v *sandboxesView) refresh(ctx context.Context) ([]patch, error) {
	list, err := v.s.list(ctx, v.sess.tenant, v.f)
	if err != nil {
		return nil, err
	}
	return v.s.one("replace", "sb-summary", "", "sandboxes-summary", summary{Total: len(list), Counts: countByStatus(list)})
}

// sandboxView follows one sandbox: its history gets each transition, its
// head and processes are re-rendered, and its files section when the
// sandbox becomes (un)available.
type sandboxView struct {
	s       *Server
	sess    *session
	id      string
	path    string
	problem string // what the files section said last
}

func (s *Server) newSandboxView(ctx context.Context, sess *session, id, path string) (*sandboxView, error) {
	h, err := s.head(ctx, sess, id)
	if err != nil {
		return nil, err
	}
	if path == "" {
		path = "/home/user"
	}
	if path, err = fsys.CleanPath(path); err != nil {
		return nil, err
	}
	return &sandboxView{s: s, sess: sess, id: id, path: path, problem: s.unavailable(h)}, nil
}

func (v *sandboxView) event(ctx context.Context, e events.Event) ([]patch, bool, error) {
	if e.Sandbox != v.id {
		return nil, false, nil
	}
	ps, err := v.s.one("prepend", "", "history-rows", "history-row", e)
	return ps, true, err
}

func (v *sandboxView) refresh(ctx context.Context) ([]patch, error) {
	h, err := v.s.head(ctx, v.sess, v.id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out, err := v.s.one("replace", "sb-head", "", "sandbox-head", h)
	if err != nil {
		return nil, err
	}
	procs, err := v.s.one("replace", "procs", "", "processes", v.s.procs(ctx, v.sess, h))
	if err != nil {
		return nil, err
	}
	out = append(out, procs...)
	if p := v.s.unavailable(h); p != v.problem {
		v.problem = p
		files, err := v.s.one("replace", "files", "", "files", v.s.files(ctx, v.sess, h, v.path))
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
	}
	return out, nil
}

// every and tick make the sandbox's page measure it while it is open.
func (v *sandboxView) every() time.Duration { return sampleEvery }

func (v *sandboxView) tick(ctx context.Context) ([]patch, error) {
	h, err := v.s.head(ctx, v.sess, v.id)
	if err != nil {
		return nil, nil // gone: nothing to draw (its events say so)
	}
	return v.s.one("replace", "metrics", "", "metrics", v.s.measure(ctx, v.sess, h, true))
}

// poolsView keeps each pool's counts and status current (not its form,
// which someone may be typing in), and adds and removes pools.
type poolsView struct {
	s     *Server
	sess  *session
	known map[string]bool
}

func (s *Server) newPoolsView(ctx context.Context, sess *session) (*poolsView, error) {
	cards, err := s.poolCards(ctx, sess)
	if err != nil {
		return nil, err
	}
	v := &poolsView{s: s, sess: sess, known: map[string]bool{}}
	for _, c := range cards {
		v.known[c.P.Name] = true
	}
	return v, nil
}

func (v *poolsView) event(_ context.Context, e events.Event) ([]patch, bool, error) {
	return nil, e.Type == "pool" || e.Type == "sandbox", nil
}

func (v *poolsView) refresh(ctx context.Context) ([]patch, error) {
	cards, err := v.s.poolCards(ctx, v.sess)
	if err != nil {
		return nil, err
	}
	var out []patch
	seen := map[string]bool{}
	for _, c := range cards {
		seen[c.P.Name] = true
		var ps []patch
		if v.known[c.P.Name] {
			ps, err = v.s.one("replace", "pool-"+c.P.Name+"-live", "", "pool-live", c)
		} else {
			ps, err = v.s.one("upsert", "pool-"+c.P.Name, "pool-cards", "pool-card", c)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	for name := range v.known {
		if !seen[name] {
			out = append(out, patch{Op: "remove", ID: "pool-" + name})
		}
	}
	v.known = seen
	return out, nil
}

// eventsView adds each event at the top of the events page.
type eventsView struct {
	s    *Server
	sess *session
}

func (v *eventsView) event(_ context.Context, e events.Event) ([]patch, bool, error) {
	ps, err := v.s.one("prepend", "", "event-rows", "event-row", e)
	return ps, false, err
}

func (v *eventsView) refresh(context.Context) ([]patch, error) { return nil, nil }
