package api

import (
	"net/http"

	"github.com/sandpool/sandpool/internal/sandbox"
)

func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request) {
	n, err := s.svc.Network(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) setNetwork(w http.ResponseWriter, r *http.Request) {
	var req sandbox.Network
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	n, err := s.svc.SetNetwork(r.Context(), who(r).Tenant, r.PathValue("id"), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}
