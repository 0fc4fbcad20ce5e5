package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sandpool/sandpool/internal/keys"
)

// principal is who made a request.
type principal struct {
	KeyID  string
	Tenant string
	Admin  bool
	// Cluster: another sandpool node, acting for Tenant.
	Cluster bool
}

type principalKey struct{}

func who(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal) // set by authenticated
	return p
}

func (s *Server) authenticated(h http.HandlerFunc, admin bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || secret == "" {
			s.writeError(w, r, fmt.Errorf("%w: send an API key as Authorization: Bearer <key>", errUnauthorized))
			return
		}
		if p, ok := s.clusterPrincipal(r, strings.TrimSpace(secret)); ok {
			h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
			return
		}
		k, err := s.keys.Authenticate(r.Context(), strings.TrimSpace(secret))
		if errors.Is(err, keys.ErrUnknown) {
			s.writeError(w, r, fmt.Errorf("%w: unknown or revoked API key", errUnauthorized))
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if admin && !k.Admin {
			s.writeError(w, r, fmt.Errorf("%w: this needs an admin key", errForbidden))
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, principal{KeyID: k.ID, Tenant: k.Tenant, Admin: k.Admin})
		h(w, r.WithContext(ctx))
	}
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tenant string `json:"tenant"`
		Admin  bool   `json:"admin"`
		// E2B makes the key in the form the E2B SDKs accept (e2b_ and 40
		// hex digits).
		E2B bool `json:"e2b"`
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	form := keys.Native
	if req.E2B {
		form = keys.E2B
	}
	k, err := s.keys.Create(r.Context(), req.Tenant, req.Admin, form)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, k)
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	list, err := s.keys.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": list})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	if err := s.keys.Revoke(r.Context(), r.PathValue("id"), who(r).KeyID); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
