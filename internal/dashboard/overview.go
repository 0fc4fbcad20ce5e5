package dashboard

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// nodeRow is one node on the overview. Every tenant sees its own
// sandboxes there; capacity, use by all tenants and memory are for admins.
type nodeRow struct {
	Name      string
	Self      bool
	Status    string // up, down, or "" when not known
	Heartbeat time.Time
	Summary   summary // the tenant's sandboxes on it
	Capacity  int     // admin
	Used      int     // admin: active sandboxes of every tenant
	Info      *sandbox.NodeInfo
}

// overviewData is the overview's live part.
type overviewData struct {
	Admin   bool
	Total   summary
	Nodes   []nodeRow
	Pools   int
	Starved []pool.Info // below min idle, or degraded
}

func (s *Server) overviewBody(ctx context.Context, sess *session) (overviewData, error) {
	list, err := s.svc.List(ctx, sess.tenant, sandbox.ListOptions{})
	if err != nil {
		return overviewData{}, err
	}
	d := overviewData{Admin: sess.admin, Total: summary{Total: len(list), Counts: countByStatus(list)}}
	byNode := map[string][]sandbox.Sandbox{}
	for _, sb := range list {
		byNode[sb.NodeName] = append(byNode[sb.NodeName], sb)
	}
	rows := map[string]*nodeRow{}
	add := func(name string) *nodeRow {
		if rows[name] == nil {
			rows[name] = &nodeRow{Name: name, Self: name == s.cfg.Node}
		}
		return rows[name]
	}
	if s.cfg.Node != "" {
		add(s.cfg.Node)
	}
	if s.cfg.Nodes != nil {
		for _, n := range s.cfg.Nodes.Nodes() {
			r := add(n.ID)
			r.Status, r.Heartbeat, r.Capacity = n.Status, n.HeartbeatAt, n.Capacity
		}
	}
	for name, sbs := range byNode {
		add(name).Summary = summary{Total: len(sbs), Counts: countByStatus(sbs)}
	}
	for _, r := range rows {
		if sess.admin {
			r.Used, _ = s.svc.ActiveOn(ctx, r.Name) // a failure shows 0; the page is not worth failing for it
			if r.Self {
				if in, err := s.svc.Node(ctx); err == nil {
					r.Info = &in
				}
			}
		}
		d.Nodes = append(d.Nodes, *r)
	}
	slices.SortFunc(d.Nodes, func(a, b nodeRow) int {
		if a.Self != b.Self {
			if a.Self {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	pools, err := s.pools.List(ctx, sess.tenant)
	if err != nil {
		return d, err
	}
	d.Pools = len(pools)
	for _, p := range pools {
		if p.Status == pool.StatusDegraded || p.Idle+p.Creating < p.MinIdle {
			d.Starved = append(d.Starved, p)
		}
	}
	return d, nil
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) error {
	d, err := s.overviewBody(r.Context(), sess)
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Session: sess, Live: "view=overview", Data: d})
	return nil
}
