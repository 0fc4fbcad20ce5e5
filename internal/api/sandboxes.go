package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSON))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req sandbox.CreateRequest
	if err := decodeBytes(body, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Pool == "" && s.placeCreate(w, r, body) {
		return // made on a node with room
	}
	tenant := who(r).Tenant
	var claim *idempotency.Claim
	id := ""
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		c, err := s.idem.Begin(r.Context(), tenant, key, body, ids.Sandbox())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if c.Replay != "" {
			// The same request again: answer with what the first made.
			sb, err := s.svc.Get(r.Context(), tenant, c.Replay)
			if errors.Is(err, errdefs.ErrNotFound) {
				// The first is still under way: the client may retry.
				s.writeError(w, r, idempotency.ErrInProgress)
				return
			}
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			writeJSON(w, http.StatusOK, sb)
			return
		}
		claim, id = &c, c.SandboxID
	}
	var sb sandbox.Sandbox
	if req.Pool != "" {
		sb, err = s.acquireFor(r, tenant, req)
	} else {
		sb, err = s.svc.Create(r.Context(), tenant, id, req)
	}
	if claim != nil {
		switch {
		case err == nil && req.Pool != "":
			claim.Repoint(r.Context(), sb.ID)
		case err != nil && req.Pool != "":
			claim.Forget(r.Context())
		case err != nil:
			// A create that made nothing is forgotten: a retry makes it
			// anew (one that failed half-way is answered as failed).
			if made, gerr := s.svc.Exists(context.WithoutCancel(r.Context()), id); gerr == nil && !made {
				claim.Forget(r.Context())
			}
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/sandboxes/"+sb.ID)
	writeJSON(w, http.StatusCreated, sb)
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	var opts sandbox.ListOptions
	q := r.URL.Query()
	for _, st := range q["status"] {
		for _, one := range strings.Split(st, ",") {
			switch sandbox.Status(one) {
			case sandbox.StatusCreating, sandbox.StatusReady, sandbox.StatusRunning, sandbox.StatusResetting, sandbox.StatusPaused,
				sandbox.StatusStopping, sandbox.StatusStopped, sandbox.StatusFailed, sandbox.StatusLost:
				opts.Statuses = append(opts.Statuses, sandbox.Status(one))
			case "all":
				opts.Statuses = append(opts.Statuses, sandbox.StatusCreating, sandbox.StatusReady, sandbox.StatusRunning,
					sandbox.StatusResetting, sandbox.StatusPaused, sandbox.StatusStopping, sandbox.StatusStopped,
					sandbox.StatusFailed, sandbox.StatusLost)
			default:
				s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "unknown status %q", one))
				return
			}
		}
	}
	opts.Pool = q.Get("pool")
	for _, m := range q["metadata"] {
		k, v, ok := strings.Cut(m, "=")
		if !ok || k == "" {
			s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "metadata filter %q: want key=value", m))
			return
		}
		if opts.Metadata == nil {
			opts.Metadata = map[string]string{}
		}
		opts.Metadata[k] = v
	}
	list, err := s.svc.List(r.Context(), who(r).Tenant, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []sandbox.Sandbox{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": list})
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.svc.Get(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Delete(r.Context(), who(r).Tenant, r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	sb, err := s.svc.Ping(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}
