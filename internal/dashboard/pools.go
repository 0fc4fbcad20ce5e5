package dashboard

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/pool"
)

// poolCard is one pool on the pools page: its counts and status (replaced
// live) and its settings form.
type poolCard struct {
	P    pool.Info
	CSRF string
}

type poolsData struct {
	Cards []poolCard
}

func (s *Server) poolCards(ctx context.Context, sess *session) ([]poolCard, error) {
	list, err := s.pools.List(ctx, sess.tenant)
	if err != nil {
		return nil, err
	}
	out := make([]poolCard, len(list))
	for i, p := range list {
		out[i] = poolCard{P: p, CSRF: sess.csrf}
	}
	return out, nil
}

func (s *Server) poolsPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	cards, err := s.poolCards(r.Context(), sess)
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "pools", page{Title: "Pools", Nav: "pools", Session: sess, Live: "view=pools", Data: poolsData{Cards: cards}})
	return nil
}

// formInt reads a whole number of at least 0 from a form field; nil if
// the field is empty.
func formInt(r *http.Request, name, label string) (*int, error) {
	v := strings.TrimSpace(r.PostForm.Get(name))
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "%s %q: want a whole number of 0 or more", label, v)
	}
	return &n, nil
}

// updatePool changes a pool's min and max idle; the pool's loop follows.
func (s *Server) updatePool(w http.ResponseWriter, r *http.Request, sess *session) error {
	minIdle, err := formInt(r, "min_idle", "min idle")
	if err != nil {
		return err
	}
	maxIdle, err := formInt(r, "max_idle", "max idle")
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if _, err := s.pools.Update(r.Context(), sess.tenant, name, pool.Update{MinIdle: minIdle, MaxIdle: maxIdle}); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/pools#pool-"+name, http.StatusSeeOther)
	return nil
}

// drainPool deletes a pool: its idle sandboxes go at once, those in use
// when released.
func (s *Server) drainPool(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := s.pools.Delete(r.Context(), sess.tenant, r.PathValue("name")); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/pools", http.StatusSeeOther)
	return nil
}
