package e2b

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"github.com/sandpool/sandpool/internal/cluster"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// Cluster is what the E2B front end needs to know of the other nodes.
type Cluster interface {
	Self() string
	Secret() string
	// Multi reports whether other nodes are up.
	Multi() bool
	Address(node string) (*url.URL, error)
}

// errNodeDown: the node a sandbox lives on cannot be reached.
var errNodeDown = errdefs.New(errdefs.ErrUnavailable, "node_unavailable", "node unavailable")

// forwarders are reverse proxies to other nodes, by address.
type forwarders struct {
	mu sync.Mutex
	m  map[string]*httputil.ReverseProxy
}

// forwardSandbox passes a request for a sandbox that lives on another node
// to that node, as it came (the caller's credentials are checked there),
// and reports whether it did. Streams go through as they come.
func (s *Server) forwardSandbox(w http.ResponseWriter, r *http.Request, sb sandbox.Sandbox) bool {
	c := s.cfg.Cluster
	if c == nil || sb.NodeName == "" || sb.NodeName == c.Self() || s.wasForwarded(r) || !c.Multi() {
		return false
	}
	u, err := c.Address(sb.NodeName)
	if err != nil {
		s.writeAPIError(w, r, fmt.Errorf("%w: sandbox %s lives on node %s: %v", errNodeDown, toE2B(sb.ID), sb.NodeName, err))
		return true
	}
	s.proxyTo(u).ServeHTTP(w, r)
	return true
}

// wasForwarded reports whether another node forwarded r (only nodes know
// the value that says so).
func (s *Server) wasForwarded(r *http.Request) bool {
	v := r.Header.Get(cluster.HeaderForwarded)
	secret := s.cfg.Cluster.Secret()
	return v != "" && secret != "" && subtle.ConstantTimeCompare([]byte(v), []byte(secret)) == 1
}

func (s *Server) proxyTo(u *url.URL) *httputil.ReverseProxy {
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	if s.fwd.m == nil {
		s.fwd.m = map[string]*httputil.ReverseProxy{}
	}
	key := u.String()
	if p := s.fwd.m[key]; p != nil {
		return p
	}
	target := *u
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&target)
			pr.Out.Host = pr.In.Host // host-routed requests keep their sandbox host name
			pr.Out.Header.Set(cluster.HeaderForwarded, s.cfg.Cluster.Secret())
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.writeAPIError(w, r, fmt.Errorf("%w: forwarding to %s: %v", errNodeDown, target.Host, err))
		},
	}
	s.fwd.m[key] = p
	return p
}
