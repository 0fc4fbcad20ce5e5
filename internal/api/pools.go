package api

import (
	"net/http"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func (s *Server) createPool(w http.ResponseWriter, r *http.Request) {
	var cfg pool.Config
	if err := decode(w, r, &cfg); err != nil {
		s.writeError(w, r, err)
		return
	}
	in, err := s.pools.Create(r.Context(), who(r).Tenant, cfg)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/pools/"+in.Name)
	writeJSON(w, http.StatusCreated, in)
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) {
	list, err := s.pools.List(r.Context(), who(r).Tenant)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pools": list})
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) {
	in, err := s.pools.Get(r.Context(), who(r).Tenant, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) updatePool(w http.ResponseWriter, r *http.Request) {
	var u pool.Update
	if err := decode(w, r, &u); err != nil {
		s.writeError(w, r, err)
		return
	}
	in, err := s.pools.Update(r.Context(), who(r).Tenant, r.PathValue("name"), u)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) deletePool(w http.ResponseWriter, r *http.Request) {
	if err := s.pools.Delete(r.Context(), who(r).Tenant, r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// AcquireRequest is the (optional) body of POST /v1/pools/{name}/acquire.
type AcquireRequest struct {
	// Timeout overrides the pool's acquire_timeout for the wait policy.
	Timeout float64 `json:"timeout,omitempty"`
}

func (s *Server) acquire(w http.ResponseWriter, r *http.Request) {
	var req AcquireRequest
	if err := decodeOptional(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Timeout < 0 || req.Timeout > 3600 {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "timeout %g out of range 0-3600", req.Timeout))
		return
	}
	sb, err := s.pools.Acquire(r.Context(), who(r).Tenant, r.PathValue("name"), time.Duration(req.Timeout*float64(time.Second)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

// acquireFor serves a create with "pool" set: an acquire from that pool.
func (s *Server) acquireFor(r *http.Request, tenant string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	in, err := s.pools.Get(r.Context(), tenant, req.Pool)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if req.Template != "" && req.Template != in.Template {
		return sandbox.Sandbox{}, errdefs.Userf(errdefs.ErrInvalid, "template %q differs from pool %s's template %q", req.Template, req.Pool, in.Template)
	}
	if req.Limits != (sandbox.Limits{}) || len(req.Env) > 0 || req.Timeout != 0 || len(req.Metadata) > 0 {
		return sandbox.Sandbox{}, errdefs.Userf(errdefs.ErrInvalid, "a sandbox from a pool has the pool's settings: give only template and pool")
	}
	return s.pools.Acquire(r.Context(), tenant, req.Pool, 0)
}

// ReleaseRequest is the (optional) body of POST /v1/sandboxes/{id}/release.
type ReleaseRequest struct {
	// Outcome of the session: "ok" (default) or "fatal" (destroy it).
	Outcome string `json:"outcome,omitempty"`
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	var req ReleaseRequest
	if err := decodeOptional(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.pools.Release(r.Context(), who(r).Tenant, r.PathValue("id"), req.Outcome)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}
