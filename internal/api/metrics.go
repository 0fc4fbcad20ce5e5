package api

import "net/http"

// metrics reports what a sandbox uses now (CPU, memory, disk).
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	m, err := s.svc.Metrics(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}
