package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Errors the API itself raises.
var (
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
	errBadRequest   = errors.New("bad request")
	errTooLarge     = errors.New("too large")
	errIdemMismatch = errors.New("idempotency key reused with a different request")
	errNodeDown     = errors.New("node unavailable")
	errInProgress   = errors.New("a create with this Idempotency-Key is under way; retry")
)

// apiError is the body of every error response.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// statusFor maps an error to its status code and stable machine code. It is
// the only place that chooses an error status.
func statusFor(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.As(err, &mbe), errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, errInProgress):
		return http.StatusTooEarly, "in_progress"
	case errors.Is(err, errIdemMismatch):
		return http.StatusUnprocessableEntity, "idempotency_mismatch"
	case errors.Is(err, sandbox.ErrCapacity):
		return http.StatusTooManyRequests, "at_capacity"
	case errors.Is(err, pool.ErrEmpty):
		return http.StatusTooManyRequests, "pool_empty"
	case errors.Is(err, sandbox.ErrShuttingDown):
		return http.StatusServiceUnavailable, "shutting_down"
	case errors.Is(err, sandbox.ErrElsewhere), errors.Is(err, errNodeDown):
		return http.StatusServiceUnavailable, "node_unavailable"
	case runtime.IsStateError(err):
		return http.StatusConflict, "sandbox_failed"
	case errors.Is(err, runtime.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, runtime.ErrInvalid):
		return http.StatusUnprocessableEntity, "invalid"
	case errors.Is(err, runtime.ErrExists):
		return http.StatusConflict, "exists"
	case errors.Is(err, runtime.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, runtime.ErrNotSupported):
		return http.StatusNotImplemented, "not_supported"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled):
		return 499, "canceled" // the client went away; nobody reads this
	}
	return http.StatusInternalServerError, "internal"
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusFor(err)
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable || status == http.StatusTooEarly {
		w.Header().Set("Retry-After", "1")
	}
	var body apiError
	body.Error.Code = code
	body.Error.Message = err.Error()
	if status == http.StatusInternalServerError {
		body.Error.Message = "internal error; see the server log"
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}
