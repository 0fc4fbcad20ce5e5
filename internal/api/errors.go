package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/idempotency"
)

// Errors the API itself raises (about HTTP, not about sandboxes).
var (
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
	errBadRequest   = errors.New("bad request")
	errTooLarge     = errors.New("too large")
	errNodeDown     = errdefs.New(errdefs.ErrUnavailable, "node_unavailable", "node unavailable")
)

// apiError is the body of every error response.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// kinds maps each kind of error to its status and default machine code,
// in the order they are tried: the API's own first, then the kinds every
// layer wraps (internal/errdefs). A Coded error in the chain gives its own
// code instead (at_capacity, pool_empty, shutting_down, ...).
var kinds = []struct {
	err    error
	status int
	code   string
}{
	{errUnauthorized, http.StatusUnauthorized, "unauthorized"},
	{errForbidden, http.StatusForbidden, "forbidden"},
	{errTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{errBadRequest, http.StatusBadRequest, "bad_request"},
	{idempotency.ErrInProgress, http.StatusTooEarly, "in_progress"},

	{errdefs.ErrNotFound, http.StatusNotFound, "not_found"},
	{errdefs.ErrInvalid, http.StatusUnprocessableEntity, "invalid"},
	{errdefs.ErrExists, http.StatusConflict, "exists"},
	{errdefs.ErrConflict, http.StatusConflict, "conflict"},
	{errdefs.ErrPermission, http.StatusForbidden, "permission_denied"},
	{errdefs.ErrExhausted, http.StatusTooManyRequests, "resource_exhausted"},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
	{errdefs.ErrFailed, http.StatusUnprocessableEntity, "failed"},
	{errdefs.ErrNotSupported, http.StatusNotImplemented, "not_supported"},
	{context.DeadlineExceeded, http.StatusGatewayTimeout, "timeout"},
	{context.Canceled, 499, "canceled"}, // the client went away; nobody reads this
}

// statusFor maps an error to its status code and stable machine code. It is
// the only place that chooses an error status.
func statusFor(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errdefs.IsStateError(err):
		// Before the kinds: a broken sandbox's error may wrap any of them.
		return http.StatusConflict, "sandbox_failed"
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			if code := errdefs.CodeOf(err); code != "" {
				return k.status, code
			}
			return k.status, k.code
		}
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
