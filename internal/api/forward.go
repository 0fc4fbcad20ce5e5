package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"github.com/sandpool/sandpool/internal/cluster"
	"github.com/sandpool/sandpool/internal/errdefs"
)

// Cluster is what the API needs to know of the other nodes.
type Cluster interface {
	Self() string
	Secret() string
	// Multi reports whether other nodes are up.
	Multi() bool
	Address(node string) (*url.URL, error)
	Others() []cluster.Node
}

// clusterPrincipal authenticates a call from another node: the cluster
// secret, acting for the tenant it names.
func (s *Server) clusterPrincipal(r *http.Request, secret string) (principal, bool) {
	if s.cluster == nil || s.cluster.Secret() == "" ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.cluster.Secret())) != 1 {
		return principal{}, false
	}
	return principal{KeyID: "cluster", Tenant: r.Header.Get(cluster.HeaderTenant), Admin: true, Cluster: true}, true
}

// wasForwarded reports whether another node forwarded r (and so it must be
// answered here). Only nodes know the value that says so.
func (s *Server) wasForwarded(r *http.Request) bool {
	v := r.Header.Get(cluster.HeaderForwarded)
	return v != "" && s.cluster.Secret() != "" && subtle.ConstantTimeCompare([]byte(v), []byte(s.cluster.Secret())) == 1
}

// forwarders are reverse proxies to other nodes, by address.
type forwarders struct {
	mu sync.Mutex
	m  map[string]*httputil.ReverseProxy
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
			pr.Out.Header.Set(cluster.HeaderForwarded, s.cluster.Secret())
		},
		// Streams (exec, attach, files, events) go through as they come.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.writeError(w, r, fmt.Errorf("%w: forwarding to %s: %v", errNodeDown, target.Host, err))
		},
	}
	s.fwd.m[key] = p
	return p
}

// forwarded wraps a handler of /v1/sandboxes/{id}/...: a request for a
// sandbox that lives on another node is passed to that node, as it came
// (the caller's key is valid there too), streams included.
func (s *Server) forwarded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cluster == nil || s.wasForwarded(r) || !s.cluster.Multi() {
			h(w, r)
			return
		}
		id := r.PathValue("id")
		node, err := s.svc.NodeOf(r.Context(), id)
		if err != nil || node == s.cluster.Self() || node == "" {
			h(w, r) // not found, or ours: answered here
			return
		}
		u, err := s.cluster.Address(node)
		if err != nil {
			if r.Method == http.MethodGet && r.Pattern == "GET /v1/sandboxes/{id}" {
				h(w, r) // the record is in the store: any node can show it
				return
			}
			s.writeError(w, r, fmt.Errorf("%w: sandbox %s lives on node %s: %v", errNodeDown, id, node, err))
			return
		}
		s.proxyTo(u).ServeHTTP(w, r)
	}
}

// placeCreate passes a create to another node when this one is full: the
// live node with the most room. It reports whether it answered.
func (s *Server) placeCreate(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if s.cluster == nil || s.wasForwarded(r) || !s.cluster.Multi() || s.svc.HasRoom(r.Context()) {
		return false
	}
	best, room := "", 0
	for _, n := range s.cluster.Others() {
		active, err := s.svc.ActiveOn(r.Context(), n.ID)
		if err != nil {
			continue
		}
		if free := n.Capacity - active; free > room {
			best, room = n.ID, free
		}
	}
	if best == "" {
		return false // everyone is full: this node answers 429
	}
	u, err := s.cluster.Address(best)
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	s.proxyTo(u).ServeHTTP(w, r)
	return true
}

// Internal routes: other nodes check, retire and destroy the pool
// sandboxes that live here.

func (s *Server) internalOnly(w http.ResponseWriter, r *http.Request) bool {
	if !who(r).Cluster {
		s.writeError(w, r, fmt.Errorf("%w: for other sandpool nodes only", errForbidden))
		return false
	}
	return true
}

func (s *Server) internalPing(w http.ResponseWriter, r *http.Request) {
	if !s.internalOnly(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := s.svc.HealthCheck(ctx, r.PathValue("id"), 10*time.Second); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) internalRetire(w http.ResponseWriter, r *http.Request) {
	if !s.internalOnly(w, r) {
		return
	}
	ok, err := s.svc.RetireIdle(r.Context(), r.PathValue("id"), reasonParam(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		s.writeError(w, r, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is no longer idle", r.PathValue("id")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) internalDestroy(w http.ResponseWriter, r *http.Request) {
	if !s.internalOnly(w, r) {
		return
	}
	if err := s.svc.DestroyPooled(r.Context(), r.PathValue("id"), reasonParam(r)); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reasonParam is the ?reason= another node gives for a retire or destroy
// (drain, idle, health, ...): a short word of lower-case letters and
// underscores, or "requested" when it is missing or anything else.
func reasonParam(r *http.Request) string {
	reason := r.URL.Query().Get("reason")
	if !reasonWord.MatchString(reason) {
		return "requested"
	}
	return reason
}

var reasonWord = pattern.New(`^[a-z_]+$`, 1, 32)
