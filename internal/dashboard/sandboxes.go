package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// allStatuses are the statuses a list can be filtered by, in lifecycle
// order.
var allStatuses = append(slices.Clone(sandbox.Active), sandbox.StatusStopped, sandbox.StatusFailed, sandbox.StatusLost)

// sbFilter is what the sandboxes page lists: a status ("" for the active
// ones, "all" for every one), a template, a pool and metadata entries.
type sbFilter struct {
	Status   string
	Template string
	Pool     string
	Meta     string // "k=v k2=v2", as typed
	meta     map[string]string
	Page     int
}

func parseFilter(q url.Values) (sbFilter, error) {
	f := sbFilter{Status: q.Get("status"), Template: strings.TrimSpace(q.Get("template")),
		Pool: strings.TrimSpace(q.Get("pool")), Meta: strings.TrimSpace(q.Get("meta")), Page: 1}
	if f.Status != "" && f.Status != "all" && !slices.Contains(allStatuses, sandbox.Status(f.Status)) {
		return f, errdefs.Userf(errdefs.ErrInvalid, "unknown status %q", f.Status)
	}
	for _, kv := range strings.FieldsFunc(f.Meta, func(r rune) bool { return r == ' ' || r == ',' }) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return f, errdefs.Userf(errdefs.ErrInvalid, "metadata filter %q: want key=value", kv)
		}
		if f.meta == nil {
			f.meta = map[string]string{}
		}
		f.meta[k] = v
	}
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return f, errdefs.Userf(errdefs.ErrInvalid, "page %q: want a number from 1", p)
		}
		f.Page = n
	}
	return f, nil
}

// query is the filter as a query string (without the page).
func (f sbFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"status": f.Status, "template": f.Template, "pool": f.Pool, "meta": f.Meta} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// URL is the list page with this filter on page n.
func (f sbFilter) URL(n int) string {
	q := f.query()
	if n > 1 {
		q.Set("page", strconv.Itoa(n))
	}
	if len(q) == 0 {
		return "/ui/sandboxes"
	}
	return "/ui/sandboxes?" + q.Encode()
}

func (f sbFilter) statuses() []sandbox.Status {
	switch f.Status {
	case "":
		return nil // the service's default: the active ones
	case "all":
		return allStatuses
	}
	return []sandbox.Status{sandbox.Status(f.Status)}
}

// match reports whether sb belongs in the list (for live updates).
func (f sbFilter) match(sb sandbox.Sandbox) bool {
	st := f.statuses()
	if st == nil {
		st = sandbox.Active
	}
	if !slices.Contains(st, sb.Status) || (f.Template != "" && sb.Template != f.Template) || (f.Pool != "" && sb.Pool != f.Pool) {
		return false
	}
	for k, v := range f.meta {
		if sb.Metadata[k] != v {
			return false
		}
	}
	return true
}

func (s *Server) list(ctx context.Context, tenant string, f sbFilter) ([]sandbox.Sandbox, error) {
	all, err := s.svc.List(ctx, tenant, sandbox.ListOptions{Statuses: f.statuses(), Metadata: f.meta, Pool: f.Pool})
	if err != nil {
		return nil, err
	}
	if f.Template == "" {
		return all, nil
	}
	out := all[:0]
	for _, sb := range all {
		if sb.Template == f.Template {
			out = append(out, sb)
		}
	}
	return out, nil
}

// sbRow is one row of the list (rows.go renders it).
type sbRow struct {
	SB   sandbox.Sandbox
	Here string // this node's name: only its sandboxes get buttons
}

// statusCount is how many sandboxes of the list have a status.
type statusCount struct {
	Status string
	N      int
}

func countByStatus(list []sandbox.Sandbox) []statusCount {
	n := map[sandbox.Status]int{}
	for _, sb := range list {
		n[sb.Status]++
	}
	var out []statusCount
	for _, st := range allStatuses {
		if n[st] > 0 {
			out = append(out, statusCount{Status: string(st), N: n[st]})
		}
	}
	return out
}

// summary is the line above the list.
type summary struct {
	Total  int
	Counts []statusCount
}

type sandboxesData struct {
	Filter    sbFilter
	Rows      []sbRow
	Summary   summary
	From, To  int
	Page      int
	Pages     int
	Statuses  []sandbox.Status
	Templates []string
	Pools     []string
}

func (s *Server) sandboxesPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		return err
	}
	list, err := s.list(r.Context(), sess.tenant, f)
	if err != nil {
		return err
	}
	d := sandboxesData{Filter: f, Summary: summary{Total: len(list), Counts: countByStatus(list)}, Page: f.Page, Statuses: allStatuses}
	d.Pages = max(1, (len(list)+s.cfg.PageSize-1)/s.cfg.PageSize)
	if f.Page > d.Pages {
		return errdefs.Userf(errdefs.ErrNotFound, "page %d: the list has %d", f.Page, d.Pages)
	}
	from, to := (f.Page-1)*s.cfg.PageSize, min(f.Page*s.cfg.PageSize, len(list))
	d.From, d.To = from+1, to
	d.Rows = make([]sbRow, 0, to-from)
	for _, sb := range list[from:to] {
		d.Rows = append(d.Rows, sbRow{SB: sb, Here: s.cfg.Node})
	}
	if tpls, err := s.svc.Templates(r.Context()); err == nil { // the filter's choices; a failure leaves a text box
		for _, t := range tpls {
			d.Templates = append(d.Templates, t.Name)
		}
	}
	if pools, err := s.pools.List(r.Context(), sess.tenant); err == nil {
		for _, p := range pools {
			d.Pools = append(d.Pools, p.Name)
		}
	}
	live := f.query()
	live.Set("view", "sandboxes")
	if f.Page == d.Pages {
		live.Set("append", "1") // new sandboxes join the last page only
	}
	s.render(w, r, http.StatusOK, "sandboxes", page{Title: "Sandboxes", Nav: "sandboxes", Session: sess,
		Live: live.Encode(), Data: d})
	return nil
}
