package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// defaultTimeout is E2B's: seconds a sandbox lives without a timeout
// given.
const defaultTimeout = 300

// maxJSON bounds a control-plane body.
const maxJSON = 1 << 20

// controlRoutes is the E2B control plane, in one table.
func (s *Server) controlRoutes() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range map[string]func(http.ResponseWriter, *http.Request, string){
		"POST /sandboxes":                 s.create,
		"POST /v2/sandboxes":              s.create,
		"GET /sandboxes":                  s.listV1,
		"GET /v2/sandboxes":               s.listV2,
		"GET /sandboxes/{id}":             s.bySandbox(s.get),
		"DELETE /sandboxes/{id}":          s.bySandbox(s.kill),
		"POST /sandboxes/{id}/connect":    s.bySandbox(s.connect),
		"POST /v2/sandboxes/{id}/connect": s.bySandbox(s.connect),
		"POST /sandboxes/{id}/resume":     s.bySandbox(s.resume),
		"POST /sandboxes/{id}/pause":      s.bySandbox(s.pause),
		"POST /sandboxes/{id}/timeout":    s.bySandbox(s.setTimeout),
		"POST /sandboxes/{id}/refreshes":  s.bySandbox(s.refresh),
		"GET /sandboxes/{id}/metrics":     s.bySandbox(s.metrics),
		"GET /sandboxes/metrics":          s.metricsOfMany,
		"PUT /sandboxes/{id}/network":     s.bySandbox(s.updateNetwork),
		// The rest of E2B's API (snapshots, fork, logs, network, templates
		// ...) is not offered: a JSON error the SDKs can read.
		"/sandboxes":     s.unsupported,
		"/sandboxes/":    s.unsupported,
		"/v2/sandboxes":  s.unsupported,
		"/v2/sandboxes/": s.unsupported,
	} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			tenant, err := s.tenantOf(r)
			if err != nil {
				s.writeAPIError(w, r, err)
				return
			}
			h(w, r, tenant)
		})
	}
	return mux
}

// bySandbox wraps a route of one sandbox: the id in the path is E2B's; a
// sandbox that lives on another node is answered there.
func (s *Server) bySandbox(h func(http.ResponseWriter, *http.Request, string, sandbox.Sandbox)) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, tenant string) {
		raw := r.PathValue("id")
		id, ok := fromE2B(raw)
		if !ok {
			s.writeAPIError(w, r, errdefs.Userf(errdefs.ErrNotFound, "sandbox %q not found", raw))
			return
		}
		sb, err := s.svc.Get(r.Context(), tenant, id)
		if err == nil && !visible(sb) {
			err = errdefs.Userf(errdefs.ErrNotFound, "sandbox %q not found", raw)
		}
		if errors.Is(err, errdefs.ErrNotFound) {
			err = errdefs.Userf(errdefs.ErrNotFound, "sandbox %q not found", raw)
		}
		if err != nil {
			s.writeAPIError(w, r, err)
			return
		}
		if s.forwardSandbox(w, r, sb) {
			return
		}
		h(w, r, tenant, sb)
	}
}

func (s *Server) unsupported(w http.ResponseWriter, r *http.Request, _ string) {
	s.writeAPIError(w, r, fmt.Errorf("%w: %s %s is not offered by sandpool", errNotSupported, r.Method, r.URL.Path))
}

// decodeBody reads an optional JSON body, leniently (unknown keys are
// ignored, as E2B's API does); an empty body leaves v as it is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSON))
	if err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	return nil
}

func checkTimeout(t *int) (int, error) {
	if t == nil {
		return defaultTimeout, nil
	}
	if *t < 0 {
		return 0, fmt.Errorf("%w: timeout %d must not be negative", errBadRequest, *t)
	}
	return *t, nil
}

// create makes a sandbox (POST /sandboxes, /v2/sandboxes): from a warm
// pool of the template when the tenant has one with an idle sandbox (not
// for autoPause: a pool's sandboxes are not paused), else a new one. It
// answers once envd (the agent) answers.
func (s *Server) create(w http.ResponseWriter, r *http.Request, tenant string) {
	var body newSandboxBody
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	timeout, err := checkTimeout(body.Timeout)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if len(body.VolumeMounts) > 0 {
		s.writeAPIError(w, r, fmt.Errorf("%w: volume mounts", errNotSupported))
		return
	}
	if body.TemplateID == "" {
		body.TemplateID = "base"
	}
	onTimeout := sandbox.OnTimeoutKill
	if body.AutoPause != nil && *body.AutoPause {
		onTimeout = sandbox.OnTimeoutPause
	}
	autoResume := body.AutoResume != nil && body.AutoResume.Enabled
	internet := body.AllowInternetAccess
	if internet != nil && *internet && body.Network == nil {
		// What SDKs before 2.51 send unasked: the server's default (open
		// unless the operator chose otherwise), not a demand for open.
		internet = nil
	}
	network, err := toNetwork(internet, body.Network)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	sb, pooled, err := s.fromPool(r.Context(), tenant, body, timeout, network)
	if err == nil && !pooled {
		sb, err = s.svc.Create(r.Context(), tenant, "", sandbox.CreateRequest{Template: body.TemplateID,
			Env: body.EnvVars, Metadata: body.Metadata, Timeout: timeout, OnTimeout: onTimeout, AutoResume: &autoResume,
			Network: network})
	}
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxJSON(sb))
}

// fromPool acquires a sandbox of body's template from one of the tenant's
// pools, if there is one with an idle sandbox; pooled false otherwise.
// The sandbox gets the create's timeout (when it passes, a pool's sandbox
// is killed and replaced), environment variables, metadata and network,
// which go when it is released.
func (s *Server) fromPool(ctx context.Context, tenant string, body newSandboxBody, timeout int, network *sandbox.Network) (sandbox.Sandbox, bool, error) {
	if body.AutoPause != nil && *body.AutoPause {
		return sandbox.Sandbox{}, false, nil
	}
	for _, name := range s.pools.OfTemplate(tenant, body.TemplateID) {
		sb, err := s.pools.Acquire(ctx, tenant, name, time.Millisecond)
		if errors.Is(err, pool.ErrEmpty) {
			continue
		}
		if err != nil {
			return sandbox.Sandbox{}, false, err
		}
		id, kill := sb.ID, sandbox.OnTimeoutKill
		sb, err = s.svc.SetTimeout(ctx, tenant, id, sandbox.TimeoutRequest{Timeout: &timeout, OnTimeout: &kill})
		if err == nil && (len(body.EnvVars) > 0 || len(body.Metadata) > 0) {
			sb, err = s.svc.SetSession(ctx, tenant, id, body.EnvVars, body.Metadata)
		}
		if err == nil && network != nil && !network.Equal(sb.Network) {
			if _, err = s.svc.SetNetwork(ctx, tenant, id, *network); err == nil {
				sb, err = s.svc.Get(ctx, tenant, id)
			}
		}
		if err != nil {
			_, _ = s.pools.Release(context.WithoutCancel(ctx), tenant, id, pool.SessionOK) // best effort: give it back
			return sandbox.Sandbox{}, false, err
		}
		return sb, true, nil
	}
	return sandbox.Sandbox{}, false, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, _ string, sb sandbox.Sandbox) {
	writeJSON(w, http.StatusOK, s.detail(sb, time.Now()))
}

// kill destroys a sandbox, or gives a pool's back to its pool.
func (s *Server) kill(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var err error
	if sb.Pool != "" {
		_, err = s.pools.Release(r.Context(), tenant, sb.ID, pool.SessionOK)
	} else {
		err = s.svc.Delete(r.Context(), tenant, sb.ID)
	}
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// connect makes a sandbox usable again: a paused one is resumed (201), a
// running one has its timeout extended if the new one ends later (200).
func (s *Server) connect(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var body timeoutBody
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	timeout, err := checkTimeout(body.Timeout)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	status := http.StatusOK
	if sb.Status == sandbox.StatusPaused {
		if sb, _, err = s.svc.Resume(r.Context(), tenant, sb.ID); err != nil {
			s.writeAPIError(w, r, err)
			return
		}
		status = http.StatusCreated
		sb, err = s.svc.SetTimeout(r.Context(), tenant, sb.ID, sandbox.TimeoutRequest{Timeout: &timeout})
	} else {
		sb, err = s.extend(r.Context(), tenant, sb, timeout)
	}
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, status, s.sandboxJSON(sb))
}

// extend gives a running sandbox the timeout asked for if that ends later
// than the one it has; either way the call counts as activity.
func (s *Server) extend(ctx context.Context, tenant string, sb sandbox.Sandbox, timeout int) (sandbox.Sandbox, error) {
	left := time.Duration(sb.Timeout) * time.Second
	if sb.TimesOutAt != nil {
		left = time.Until(*sb.TimesOutAt)
	}
	if sb.Timeout == 0 || time.Duration(timeout)*time.Second <= left {
		return s.svc.Ping(ctx, tenant, sb.ID)
	}
	return s.svc.SetTimeout(ctx, tenant, sb.ID, sandbox.TimeoutRequest{Timeout: &timeout})
}

// resume is the old SDKs' resume: 409 for a running sandbox.
func (s *Server) resume(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var body timeoutBody
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	timeout, err := checkTimeout(body.Timeout)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if sb.Status != sandbox.StatusPaused {
		s.writeAPIError(w, r, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is already running", toE2B(sb.ID)))
		return
	}
	if sb, _, err = s.svc.Resume(r.Context(), tenant, sb.ID); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	req := sandbox.TimeoutRequest{Timeout: &timeout}
	if body.AutoPause != nil {
		on := sandbox.OnTimeoutKill
		if *body.AutoPause {
			on = sandbox.OnTimeoutPause
		}
		req.OnTimeout = &on
	}
	if sb, err = s.svc.SetTimeout(r.Context(), tenant, sb.ID, req); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxJSON(sb))
}

// pause freezes a running sandbox; 409 if it is paused already.
func (s *Server) pause(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	if sb.Status == sandbox.StatusPaused {
		s.writeAPIError(w, r, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is already paused", toE2B(sb.ID)))
		return
	}
	if _, err := s.svc.Pause(r.Context(), tenant, sb.ID, sandbox.PauseOptions{}); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setTimeout sets a running sandbox's timeout, from now. A paused sandbox
// is not found, as E2B answers (old SDKs' connect relies on it).
func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var body timeoutBody
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if body.Timeout == nil {
		s.writeAPIError(w, r, fmt.Errorf("%w: timeout is required", errBadRequest))
		return
	}
	timeout, err := checkTimeout(body.Timeout)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if sb.Status == sandbox.StatusPaused {
		s.writeAPIError(w, r, errdefs.Userf(errdefs.ErrNotFound, "sandbox %s is paused", toE2B(sb.ID)))
		return
	}
	if _, err := s.svc.SetTimeout(r.Context(), tenant, sb.ID, sandbox.TimeoutRequest{Timeout: &timeout}); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// refresh keeps a running sandbox alive: activity, which restarts its
// (inactivity) timeout.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	var body struct {
		Duration *int `json:"duration"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if body.Duration != nil && *body.Duration < 0 {
		s.writeAPIError(w, r, fmt.Errorf("%w: duration must not be negative", errBadRequest))
		return
	}
	if sb.Status == sandbox.StatusPaused {
		s.writeAPIError(w, r, errdefs.Userf(errdefs.ErrNotFound, "sandbox %s is paused", toE2B(sb.ID)))
		return
	}
	if _, err := s.svc.Ping(sandbox.WithoutAutoResume(r.Context()), tenant, sb.ID); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// metrics answers what a sandbox uses now, as a series of one.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request, tenant string, sb sandbox.Sandbox) {
	m, err := s.svc.Metrics(r.Context(), tenant, sb.ID)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, []metricJSON{toMetric(m)})
}

func toMetric(m sandbox.Metrics) metricJSON {
	return metricJSON{Timestamp: m.Timestamp, TimestampUnix: m.Timestamp.Unix(), CPUCount: m.CPUCount, CPUUsedPct: m.CPUUsedPct,
		MemUsed: m.MemUsedBytes, MemTotal: m.MemTotalBytes, MemCache: m.MemCacheBytes, DiskUsed: m.DiskUsedBytes, DiskTotal: m.DiskTotalBytes}
}

// metricsOfMany answers GET /sandboxes/metrics?sandbox_ids=a,b: each
// running sandbox of the tenant's that lives here, by id.
func (s *Server) metricsOfMany(w http.ResponseWriter, r *http.Request, tenant string) {
	out := map[string]metricJSON{}
	for _, raw := range splitList(r.URL.Query()["sandbox_ids"]) {
		id, ok := fromE2B(raw)
		if !ok {
			continue
		}
		m, err := s.svc.Metrics(r.Context(), tenant, id)
		if err == nil {
			out[raw] = toMetric(m)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}
