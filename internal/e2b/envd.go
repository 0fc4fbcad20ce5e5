package e2b

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/sandpool/sandpool/internal/e2b/envd/filesystem/filesystemconnect"
	"github.com/sandpool/sandpool/internal/e2b/envd/process/processconnect"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// envdRoutes are envd's: the Connect RPC services (JSON or binary; the
// SDKs use JSON), /health and /files. They run for a request already
// routed to a sandbox and authorized for it (targetOf).
func (s *Server) envdRoutes() http.Handler {
	// No compression: the JS SDK refuses compressed stream messages.
	opts := []connect.HandlerOption{connect.WithCompression("gzip", nil, nil)}
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(processService{s}, opts...))
	mux.Handle(filesystemconnect.NewFilesystemHandler(filesystemService{s}, opts...))
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /files", s.readFiles)
	mux.HandleFunc("POST /files", s.writeFiles)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeEnvdError(w, r, errdefs.Userf(errdefs.ErrNotFound, "envd has no %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// health answers whether envd (the agent) answers: the SDKs' isRunning.
// It is not activity; but a paused sandbox made with auto-resume is
// resumed by it, as by any envd traffic.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r.Context())
	var err error
	if t.sb.Status == sandbox.StatusPaused {
		_, err = s.svc.Ping(r.Context(), t.sb.Tenant, t.sb.ID)
	} else {
		err = s.svc.HealthCheck(r.Context(), t.sb.ID, 10*time.Second)
	}
	if err != nil {
		s.writeEnvdError(w, r, fmt.Errorf("%w: %v", errGone, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// keepaliveInterval is how often a stream with nothing else to send sends
// a keepalive: the Keepalive-Ping-Interval (seconds) the SDK asks for,
// else 90 s as envd does.
func keepaliveInterval(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get("Keepalive-Ping-Interval")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 90 * time.Second
}
