package e2b

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/pool"
)

// Errors the E2B front end raises itself, about the request rather than a
// sandbox.
var (
	errUnauthorized = errors.New("unauthorized")
	errBadRequest   = errors.New("bad request")
	// errGone: the sandbox a request is routed to does not run (unknown,
	// stopped, or paused without auto-resume). The SDKs read a 502 from
	// the sandbox proxy as "the sandbox is gone".
	errGone = errors.New("sandbox not running")
	// errNotSupported: part of the E2B API sandpool does not offer.
	errNotSupported = errors.New("not supported")
	// errShuttingDown: the server is stopping.
	errShuttingDown = errdefs.New(errdefs.ErrUnavailable, "shutting_down", "sandpool is shutting down")
)

// kinds is the one table that maps an error to what each side of the E2B
// surface answers: the control plane's HTTP status (its body carries the
// status again as "code"), the envd RPCs' Connect code, and the envd HTTP
// routes' status (/files, /health). The first kind in the chain wins, in
// this order.
var kinds = []struct {
	err     error
	api     int          // control plane
	rpc     connect.Code // envd Connect RPCs
	envdAPI int          // envd HTTP routes
}{
	{errUnauthorized, http.StatusUnauthorized, connect.CodeUnauthenticated, http.StatusUnauthorized},
	{errBadRequest, http.StatusBadRequest, connect.CodeInvalidArgument, http.StatusBadRequest},
	{errGone, http.StatusNotFound, connect.CodeUnavailable, http.StatusBadGateway},
	{errNotSupported, http.StatusNotImplemented, connect.CodeUnimplemented, http.StatusNotImplemented},
	{pool.ErrEmpty, http.StatusServiceUnavailable, connect.CodeResourceExhausted, http.StatusServiceUnavailable},

	{errdefs.ErrNotFound, http.StatusNotFound, connect.CodeNotFound, http.StatusNotFound},
	{errdefs.ErrInvalid, http.StatusBadRequest, connect.CodeInvalidArgument, http.StatusBadRequest},
	{errdefs.ErrExists, http.StatusConflict, connect.CodeAlreadyExists, http.StatusConflict},
	{errdefs.ErrConflict, http.StatusConflict, connect.CodeFailedPrecondition, http.StatusConflict},
	{errdefs.ErrPermission, http.StatusForbidden, connect.CodePermissionDenied, http.StatusForbidden},
	{errdefs.ErrExhausted, http.StatusTooManyRequests, connect.CodeResourceExhausted, http.StatusTooManyRequests},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable, connect.CodeUnavailable, http.StatusServiceUnavailable},
	{errdefs.ErrFailed, http.StatusBadRequest, connect.CodeFailedPrecondition, http.StatusBadRequest},
	{errdefs.ErrNotSupported, http.StatusNotImplemented, connect.CodeUnimplemented, http.StatusNotImplemented},
	{context.DeadlineExceeded, http.StatusGatewayTimeout, connect.CodeDeadlineExceeded, http.StatusGatewayTimeout},
	{context.Canceled, 499, connect.CodeCanceled, 499},
}

// kindOf finds err's row; ok false for an unexpected error (a 500).
func kindOf(err error) (api int, rpc connect.Code, envdAPI int, ok bool) {
	if errdefs.IsStateError(err) {
		// A broken sandbox is retired: to the SDKs it is gone.
		return http.StatusConflict, connect.CodeUnavailable, http.StatusBadGateway, true
	}
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.api, k.rpc, k.envdAPI, true
		}
	}
	return http.StatusInternalServerError, connect.CodeInternal, http.StatusInternalServerError, false
}

// apiError is the body of every error the E2B API and envd's HTTP routes
// answer: the SDKs require both keys, and read "code" (the HTTP status)
// rather than the status line.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// writeAPIError answers a control-plane request with err.
func (s *Server) writeAPIError(w http.ResponseWriter, r *http.Request, err error) {
	status, _, _, ok := kindOf(err)
	s.writeStatus(w, r, status, ok, err)
}

// writeEnvdError answers an envd HTTP route (/files, /health) with err.
func (s *Server) writeEnvdError(w http.ResponseWriter, r *http.Request, err error) {
	_, _, status, ok := kindOf(err)
	s.writeStatus(w, r, status, ok, err)
}

func (s *Server) writeStatus(w http.ResponseWriter, r *http.Request, status int, known bool, err error) {
	msg := err.Error()
	if !known {
		s.log.Error("E2B request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error; see the server log"
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, apiError{Code: status, Message: msg})
}

// rpcError turns err into the error a Connect handler returns.
func rpcError(log *slog.Logger, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	_, code, _, known := kindOf(err)
	if !known {
		log.Error("E2B envd call failed", "err", err)
		return connect.NewError(code, errors.New("internal error; see the server log"))
	}
	return connect.NewError(code, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}
