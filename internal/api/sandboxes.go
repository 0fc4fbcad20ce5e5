package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

// idempotencyTTL is how long an Idempotency-Key is remembered.
const idempotencyTTL = 24 * time.Hour

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
	id := ""
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if len(key) > 255 {
			s.writeError(w, r, fmt.Errorf("%w: Idempotency-Key longer than 255 bytes", errBadRequest))
			return
		}
		sum := sha256.Sum256(body)
		idem := store.Idempotency{Tenant: tenant, Key: key, BodyHash: hex.EncodeToString(sum[:]),
			SandboxID: ids.Sandbox(), ExpiresAt: time.Now().Add(idempotencyTTL)}
		got, err := s.st.PutIdempotency(r.Context(), idem)
		switch {
		case errors.Is(err, errdefs.ErrExists):
			if got.BodyHash != idem.BodyHash {
				s.writeError(w, r, errIdemMismatch)
				return
			}
			// The same request again: answer with what the first made.
			sb, err := s.svc.Get(r.Context(), tenant, got.SandboxID)
			if errors.Is(err, errdefs.ErrNotFound) {
				// The first is still under way: the client may retry.
				s.writeError(w, r, errInProgress)
				return
			}
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			writeJSON(w, http.StatusOK, sb)
			return
		case err != nil:
			s.writeError(w, r, err)
			return
		}
		id = idem.SandboxID
	}
	var sb sandbox.Sandbox
	if req.Pool != "" {
		sb, err = s.acquireFor(r, tenant, req)
	} else {
		sb, err = s.svc.Create(r.Context(), tenant, id, req)
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" && id != "" {
		ctx := context.WithoutCancel(r.Context())
		switch {
		case err == nil && req.Pool != "":
			_ = s.st.SetIdempotency(ctx, tenant, key, sb.ID) // best effort: a replay then finds nothing and makes anew
		case err != nil:
			// Nothing was made (or it failed): a retry makes it anew.
			if _, gerr := s.st.GetSandbox(ctx, id); errors.Is(gerr, errdefs.ErrNotFound) || req.Pool != "" {
				_ = s.st.DeleteIdempotency(ctx, tenant, key) // best effort, as above
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

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	list, err := s.svc.Templates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": list})
}

// createTemplate registers a template from a directory on the server, or
// defines one on another template's files; either may have hooks.
func (s *Server) createTemplate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
		Dir  string `json:"dir"`
		From string `json:"from"`
		sandbox.Hooks
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	switch {
	case req.Dir != "" && req.From != "":
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "give dir or from, not both"))
	case req.From != "":
		t, err := s.svc.DefineTemplate(r.Context(), req.Name, req.From, req.Hooks)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, t)
	case req.Dir != "":
		if _, err := s.templates.ImportTemplate(r.Context(), req.Name, runtime.TemplateSource{Dir: req.Dir}); err != nil {
			s.writeError(w, r, err)
			return
		}
		s.finishImport(w, r, req.Name, req.Hooks)
	default:
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "dir or from is required (or PUT a tar archive to /v1/templates/{name})"))
	}
}

// finishImport gives a freshly imported template its hooks, if any, and
// answers with it.
func (s *Server) finishImport(w http.ResponseWriter, r *http.Request, name string, hooks sandbox.Hooks) {
	if hooks != (sandbox.Hooks{}) {
		if _, err := s.svc.DefineTemplate(r.Context(), name, name, hooks); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	list, err := s.svc.Templates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, t := range list {
		if t.Name == name {
			writeJSON(w, http.StatusCreated, t)
			return
		}
	}
	s.writeError(w, r, fmt.Errorf("template %s vanished after its import", name))
}

func (s *Server) uploadTemplate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	hooks := sandbox.Hooks{Setup: q.Get("setup"), SessionSetup: q.Get("session_setup"), SessionTeardown: q.Get("session_teardown")}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	name := r.PathValue("name")
	if _, err := s.templates.ImportTemplate(r.Context(), name, runtime.TemplateSource{Tar: body}); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.finishImport(w, r, name, hooks)
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.DeleteTemplate(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
