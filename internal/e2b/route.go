package e2b

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// route tells whether r is for a sandbox's envd or one of its ports, as
// E2B's proxy routes: by the headers E2b-Sandbox-Id and E2b-Sandbox-Port
// (both needed), else by a host name <port>-<sandboxID>.<domain>. It
// returns the sandbox's sandpool id and the port.
func (s *Server) route(r *http.Request) (id string, port int, routed bool, err error) {
	hid, hport := r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port")
	if hid != "" || hport != "" {
		if hid == "" || hport == "" {
			return "", 0, true, fmt.Errorf("%w: send both E2b-Sandbox-Id and E2b-Sandbox-Port", errBadRequest)
		}
		return parseTarget(hid, hport)
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, ok := strings.CutSuffix(strings.ToLower(host), "."+s.cfg.Domain)
	if !ok || strings.Contains(label, ".") {
		return "", 0, false, nil
	}
	p, sid, ok := strings.Cut(label, "-")
	if !ok {
		return "", 0, true, fmt.Errorf("%w: host %q: want <port>-<sandboxID>.%s", errBadRequest, r.Host, s.cfg.Domain)
	}
	return parseTarget(sid, p)
}

func parseTarget(sid, p string) (string, int, bool, error) {
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, true, fmt.Errorf("%w: port %q", errBadRequest, p)
	}
	id, ok := fromE2B(sid)
	if !ok {
		return "", 0, true, fmt.Errorf("%w: no sandbox %q", errGone, sid)
	}
	return id, port, true, nil
}

// serveSandbox answers a request routed to a sandbox: it must run (or be
// paused with auto-resume) and the request must be authorized for it;
// then port 49983 is envd, any other port the sandbox's own server.
func (s *Server) serveSandbox(w http.ResponseWriter, r *http.Request, id string, port int) {
	sb, err := s.svc.Lookup(r.Context(), id)
	if errors.Is(err, errdefs.ErrNotFound) {
		s.writeEnvdError(w, r, fmt.Errorf("%w: no sandbox %s", errGone, toE2B(id)))
		return
	}
	if err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	if s.forwardSandbox(w, r, sb) {
		return
	}
	if err := s.authorizeSandbox(r, sb); err != nil {
		s.writeEnvdError(w, r, err)
		return
	}
	switch {
	case sb.Status == sandbox.StatusRunning:
	case sb.Status == sandbox.StatusPaused && sb.AutoResume:
		// Any call resumes it; the first one does so here.
	default:
		s.writeEnvdError(w, r, fmt.Errorf("%w: sandbox %s is %s", errGone, toE2B(id), sb.Status))
		return
	}
	r = r.WithContext(withTarget(r.Context(), target{sb: sb, port: port}))
	if port == EnvdPort {
		s.envd.ServeHTTP(w, r)
		return
	}
	s.ports.Serve(w, r, r.URL.Path, func(ctx context.Context) (net.Conn, error) {
		return s.svc.DialPort(ctx, sb.Tenant, sb.ID, port)
	})
}
