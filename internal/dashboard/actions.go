package dashboard

import (
	"context"
	"fmt"
	"net/http"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// local returns tenant's sandbox id if it lives on this node; actions on
// another node's sandbox are refused with the node to go to.
func (s *Server) local(ctx context.Context, sess *session, id string) (sandbox.Sandbox, error) {
	sb, err := s.svc.Get(ctx, sess.tenant, id)
	if err != nil {
		return sb, err
	}
	if s.cfg.Node != "" && sb.NodeName != "" && sb.NodeName != s.cfg.Node {
		return sb, fmt.Errorf("%w: sandbox %s lives on node %s; open that node's dashboard to act on it", sandbox.ErrElsewhere, id, sb.NodeName)
	}
	return sb, nil
}

// actions are what the list's buttons do, by the button's name; its
// value is the sandbox.
var actions = map[string]func(*Server, context.Context, *session, string) error{
	"pause": func(s *Server, ctx context.Context, sess *session, id string) error {
		_, err := s.svc.Pause(ctx, sess.tenant, id, sandbox.PauseOptions{})
		return err
	},
	"resume": func(s *Server, ctx context.Context, sess *session, id string) error {
		_, _, err := s.svc.Resume(ctx, sess.tenant, id)
		return err
	},
	"delete": func(s *Server, ctx context.Context, sess *session, id string) error {
		return s.svc.Delete(ctx, sess.tenant, id)
	},
}

// act runs the action of the list's button that was pressed (one form
// for the whole table keeps a thousand rows light).
func (s *Server) act(w http.ResponseWriter, r *http.Request, sess *session) error {
	for name, do := range actions {
		id := r.PostForm.Get(name)
		if id == "" {
			continue
		}
		if _, err := s.local(r.Context(), sess, id); err != nil {
			return err
		}
		if err := do(s, r.Context(), sess, id); err != nil {
			return err
		}
		return back(w, r, "/ui/sandboxes")
	}
	return fmt.Errorf("%w: no action (pause, resume or delete) was chosen", errBadForm)
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	if _, err := s.svc.Pause(r.Context(), sess.tenant, id, sandbox.PauseOptions{Archive: r.PostForm.Get("archive") != ""}); err != nil {
		return err
	}
	return back(w, r, "/ui/sandboxes/"+id)
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	if _, _, err := s.svc.Resume(r.Context(), sess.tenant, id); err != nil {
		return err
	}
	return back(w, r, "/ui/sandboxes/"+id)
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	if _, err := s.local(r.Context(), sess, id); err != nil {
		return err
	}
	if err := s.svc.Delete(r.Context(), sess.tenant, id); err != nil {
		return err
	}
	return back(w, r, "/ui/sandboxes")
}

// back answers an action with a redirect to the form's "next" page (a
// dashboard path), or def.
func back(w http.ResponseWriter, r *http.Request, def string) error {
	http.Redirect(w, r, localPath(r.PostForm.Get("next"), def), http.StatusSeeOther)
	return nil
}
