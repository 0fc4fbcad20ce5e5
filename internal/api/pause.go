package api

import (
	"net/http"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// PauseRequest is the (optional) body of POST /v1/sandboxes/{id}/pause.
type PauseRequest struct {
	// Archive stops the processes too, freeing memory; files are kept.
	Archive bool `json:"archive,omitempty"`
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	var req PauseRequest
	if err := decodeOptional(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.svc.Pause(r.Context(), who(r).Tenant, r.PathValue("id"), sandbox.PauseOptions{Archive: req.Archive})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

// ResumeResult is a resumed sandbox and what the resume brought back.
type ResumeResult struct {
	sandbox.Sandbox
	sandbox.ResumeInfo
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	sb, info, err := s.svc.Resume(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ResumeResult{Sandbox: sb, ResumeInfo: info})
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var req sandbox.TimeoutRequest
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.svc.SetTimeout(r.Context(), who(r).Tenant, r.PathValue("id"), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}
