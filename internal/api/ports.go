package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/portproxy"
)

// errUpstream: the exchange with the server in the sandbox failed after
// it was reached.
var errUpstream = errdefs.New(errdefs.ErrUnavailable, "upstream_failed", "the server in the sandbox failed")

func (s *Server) newPortProxy() *portproxy.Proxy {
	return portproxy.New(portproxy.Options{
		// The caller's API key is for sandpool, not for the sandbox.
		StripHeaders: []string{"Authorization"},
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			s.writeError(w, r, fmt.Errorf("%w: %v", errUpstream, err))
		},
	})
}

// port passes a request to a TCP port inside the sandbox:
// /v1/sandboxes/{id}/ports/{port}/{path...} reaches /{path...} there.
// HTTP and WebSocket go through, responses stream; the API key is not
// passed on.
func (s *Server) port(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port <= 0 || port > 65535 {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrInvalid, "port %q: want a number from 1 to 65535", r.PathValue("port")))
		return
	}
	tenant, id := who(r).Tenant, r.PathValue("id")
	// Dialled before the request goes on, so that a missing sandbox or a
	// closed port is answered with its own status.
	conn, err := s.svc.DialPort(r.Context(), tenant, id, port)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var first atomic.Pointer[net.Conn]
	first.Store(&conn)
	s.ports.Serve(w, r, "/"+r.PathValue("path"), func(ctx context.Context) (net.Conn, error) {
		if c := first.Swap(nil); c != nil {
			return *c, nil
		}
		return s.svc.DialPort(ctx, tenant, id, port)
	})
	if c := first.Swap(nil); c != nil {
		(*c).Close() // the request never needed it
	}
}
