package dashboard

import (
	"net/http"
	"slices"
	"strings"

	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// The admin pages: templates, keys and nodes. Routes give them to admin
// keys only.

// templateRow is a template and the signed-in tenant's pools that use it.
type templateRow struct {
	T     sandbox.Template
	Pools []string
}

func (s *Server) templatesPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	list, err := s.svc.Templates(r.Context())
	if err != nil {
		return err
	}
	pools, err := s.pools.List(r.Context(), sess.tenant)
	if err != nil {
		return err
	}
	rows := make([]templateRow, len(list))
	for i, t := range list {
		rows[i].T = t
		for _, p := range pools {
			if p.Template == t.Name {
				rows[i].Pools = append(rows[i].Pools, p.Name)
			}
		}
	}
	slices.SortFunc(rows, func(a, b templateRow) int { return strings.Compare(a.T.Name, b.T.Name) })
	s.render(w, r, http.StatusOK, "templates", page{Title: "Templates", Nav: "templates", Session: sess, Data: rows})
	return nil
}

type keysData struct {
	Keys   []keys.Key
	Self   string   // the signed-in key, which cannot revoke itself
	New    keys.Key // a key just made: its secret is shown this once
	Tenant string   // the form's values, kept after a mistake
}

func (s *Server) keysPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	return s.renderKeys(w, r, sess, http.StatusOK, keysData{})
}

func (s *Server) renderKeys(w http.ResponseWriter, r *http.Request, sess *session, status int, d keysData) error {
	list, err := s.keys.List(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(list, func(a, b keys.Key) int { return b.CreatedAt.Compare(a.CreatedAt) })
	d.Keys, d.Self = list, sess.keyID
	s.render(w, r, status, "keys", page{Title: "API keys", Nav: "keys", Session: sess, Data: d})
	return nil
}

// createKey makes a key and shows its secret once, in this response only
// (never in a URL: no redirect).
func (s *Server) createKey(w http.ResponseWriter, r *http.Request, sess *session) error {
	form := keys.Native
	if r.PostForm.Get("e2b") != "" {
		form = keys.E2B
	}
	tenant := strings.TrimSpace(r.PostForm.Get("tenant"))
	k, err := s.keys.Create(r.Context(), tenant, r.PostForm.Get("admin") != "", form)
	if err != nil {
		return err
	}
	s.log.Info("dashboard: key created", "tenant", k.Tenant, "key", k.ID, "by", sess.keyID)
	return s.renderKeys(w, r, sess, http.StatusCreated, keysData{New: k})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if err := s.keys.Revoke(r.Context(), id, sess.keyID); err != nil {
		return err
	}
	s.sessions.endKey(id) // its sessions end now here, and at the next sweep on other nodes
	s.log.Info("dashboard: key revoked", "key", id, "by", sess.keyID)
	http.Redirect(w, r, "/ui/keys", http.StatusSeeOther)
	return nil
}

// nodeInfo is one node on the nodes page.
type nodeInfo struct {
	nodeRow
	Address   string
	StartedAt string
}

type nodesData struct {
	Nodes []nodeInfo
	Self  *sandbox.NodeInfo
}

func (s *Server) nodesPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	var d nodesData
	if in, err := s.svc.Node(r.Context()); err == nil {
		d.Self = &in
	} else {
		return err
	}
	if s.cfg.Nodes != nil {
		for _, n := range s.cfg.Nodes.Nodes() {
			used, _ := s.svc.ActiveOn(r.Context(), n.ID) // a failure shows 0
			d.Nodes = append(d.Nodes, nodeInfo{nodeRow: nodeRow{Name: n.ID, Self: n.ID == s.cfg.Node, Status: n.Status,
				Heartbeat: n.HeartbeatAt, Capacity: n.Capacity, Used: used}, Address: n.Address, StartedAt: clock(n.StartedAt)})
		}
	}
	slices.SortFunc(d.Nodes, func(a, b nodeInfo) int { return strings.Compare(a.Name, b.Name) })
	s.render(w, r, http.StatusOK, "nodes", page{Title: "Nodes", Nav: "nodes", Session: sess, Data: d})
	return nil
}
