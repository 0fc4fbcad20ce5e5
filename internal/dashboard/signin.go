package dashboard

import (
	"errors"
	"net/http"
	"strings"

	"github.com/sandpool/sandpool/internal/keys"
)

// signInData is the sign-in page's data.
type signInData struct {
	Next    string
	Problem string
	TTL     string // how long a session lasts, in words
	Idle    string
}

func (s *Server) signInData(next, problem string) signInData {
	return signInData{Next: next, Problem: problem, TTL: humanSeconds(s.cfg.SessionTTL.Seconds()), Idle: humanSeconds(s.cfg.IdleTimeout.Seconds())}
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	next := localPath(r.URL.Query().Get("next"), "/ui/")
	if sess != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return nil
	}
	s.render(w, r, http.StatusOK, "signin", page{Title: "Sign in", Data: s.signInData(next, "")})
	return nil
}

// signIn exchanges an API key for a session. The key is checked, then
// dropped: the browser gets a random session id, the server keeps who the
// key belongs to.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, old *session) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		return errBadForm
	}
	next := localPath(r.PostForm.Get("next"), "/ui/")
	secret := strings.TrimSpace(r.PostForm.Get("key"))
	k, err := s.keys.Authenticate(r.Context(), secret)
	if secret == "" || errors.Is(err, keys.ErrUnknown) {
		problem := "That API key is unknown or revoked."
		if secret == "" {
			problem = "Enter an API key."
		}
		s.render(w, r, http.StatusUnauthorized, "signin", page{Title: "Sign in", Data: s.signInData(next, problem)})
		return nil
	}
	if err != nil {
		return err
	}
	if old != nil { // a new sign-in replaces the old session (no fixation)
		s.sessions.end(cookieValue(r))
	}
	id, _ := s.sessions.create(k)
	setCookie(w, r, id, s.cfg.SessionTTL)
	s.log.Info("dashboard sign-in", "tenant", k.Tenant, "key", k.ID)
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, _ *session) error {
	s.sessions.end(cookieValue(r))
	clearCookie(w, r)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
	return nil
}
