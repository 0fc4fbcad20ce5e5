package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func TestStatusFor(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("outer: %w", err) }
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{errUnauthorized, 401, "unauthorized"},
		{errForbidden, 403, "forbidden"},
		{&http.MaxBytesError{Limit: 1}, 413, "too_large"},
		{wrap(errTooLarge), 413, "too_large"},
		{wrap(errBadRequest), 400, "bad_request"},
		{idempotency.ErrMismatch, 422, "idempotency_mismatch"},
		{idempotency.ErrInProgress, 425, "in_progress"},
		{errNodeDown, 503, "node_unavailable"},
		{wrap(sandbox.ErrCapacity), 429, "at_capacity"},
		{sandbox.ErrShuttingDown, 503, "shutting_down"},
		{&errdefs.StateError{Sandbox: "sb_x", Err: errors.New("agent gone")}, 409, "sandbox_failed"},
		{errdefs.Userf(errdefs.ErrNotFound, "no sandbox"), 404, "not_found"},
		{errdefs.Userf(errdefs.ErrInvalid, "negative"), 422, "invalid"},
		{errdefs.Userf(errdefs.ErrExists, "exists"), 409, "exists"},
		{errdefs.Userf(errdefs.ErrConflict, "stopped"), 409, "conflict"},
		{wrap(errdefs.ErrNotSupported), 501, "not_supported"},
		{errdefs.Userf(errdefs.ErrPermission, "/etc/passwd: permission denied"), 403, "permission_denied"},
		{wrap(errdefs.Userf(agent.ErrProcessLimit, "cannot run sh")), 429, "resource_exhausted"},
		{wrap(pool.ErrEmpty), 429, "pool_empty"},
		{wrap(sandbox.ErrElsewhere), 503, "node_unavailable"},
		{fmt.Errorf("%w: asked for 1, 0 of 1 free", sandbox.ErrGPUsExhausted), 409, "gpus_exhausted"},
		{fmt.Errorf("%w (asked for 1)", gpu.ErrNone), 422, "no_gpus"},
		{context.DeadlineExceeded, 504, "timeout"},
		{errors.New("disk on fire"), 500, "internal"},
	} {
		status, code := statusFor(tc.err)
		if status != tc.status || code != tc.code {
			t.Errorf("statusFor(%v) = %d %s, want %d %s", tc.err, status, code, tc.status, tc.code)
		}
	}
}

func TestErrorBody(t *testing.T) {
	s := &Server{log: discardLog()}
	for _, tc := range []struct {
		err        error
		retryAfter string
		message    string
	}{
		{errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", "sb_1"), "", `no sandbox "sb_1"`},
		{sandbox.ErrCapacity, "1", "at capacity"},
		{errors.New("secret internal detail"), "", "internal error; see the server log"},
	} {
		w := httptest.NewRecorder()
		s.writeError(w, httptest.NewRequest("GET", "/v1/x", nil), tc.err)
		var body apiError
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q: %v", w.Body, err)
		}
		if body.Error.Message != tc.message || body.Error.Code == "" {
			t.Errorf("%v: body %+v", tc.err, body)
		}
		if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After %q", tc.err, got)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("content type %q", w.Header().Get("Content-Type"))
		}
	}
}
