package mcpserver

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/sandpool/sandpool/client"
)

// session is what one MCP session holds: the client of its API key, and
// the sandboxes it owns. Those are its own sandbox (made or acquired on
// the first call that needs one) and those it acquired from a pool; they
// are kept alive while the session lasts and destroyed or released when
// it ends. Sandboxes made with create_sandbox are the model's: they
// outlive the session.
type session struct {
	id    string // the MCP session id ("" over stdio)
	owner string // the API key's hash (over HTTP): only it may end the session
	c     *client.Client
	pool  string // the pool its own sandbox comes from, if any

	// ctx ends with the session (or the server): calls under way are
	// cancelled, and the keepalive stops.
	ctx     context.Context
	cancel  context.CancelFunc
	cleaned chan struct{} // closed when its sandboxes are gone

	mu       sync.Mutex
	ended    bool
	own      string            // its own sandbox, "" until needed
	creating chan struct{}     // closed when a make of own is done
	owned    map[string]string // sandbox id -> pool ("" for made here)
}

func newSession(parent context.Context, id, owner string, c *client.Client, pool string) *session {
	ctx, cancel := context.WithCancel(parent)
	return &session{id: id, owner: owner, c: c, pool: pool, ctx: ctx, cancel: cancel,
		cleaned: make(chan struct{}), owned: map[string]string{}}
}

// errSessionEnded is a call that came after its session ended.
var errSessionEnded = errors.New("this MCP session has ended")

// sandbox returns the session's own sandbox, making it (from the
// template, or from the pool) if it has none: an agent that never named a
// sandbox still gets one, for the whole session.
func (s *session) sandbox(ctx context.Context, cfg Config) (string, error) {
	s.mu.Lock()
	for s.own == "" && s.creating != nil && !s.ended {
		wait := s.creating
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		s.mu.Lock()
	}
	if s.ended {
		s.mu.Unlock()
		return "", errSessionEnded
	}
	if s.own != "" {
		id := s.own
		s.mu.Unlock()
		return id, nil
	}
	done := make(chan struct{})
	s.creating = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.creating = nil
		s.mu.Unlock()
		close(done)
	}()

	// The make is not cut short by the session ending (a create cancelled
	// half way may still make the sandbox): it finishes, and then the
	// sandbox is either the session's or undone here.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var sb *client.Sandbox
	var err error
	if s.pool != "" {
		sb, err = s.c.Acquire(mctx, s.pool, 0)
	} else {
		sb, err = s.c.CreateSandbox(mctx, client.CreateSandboxRequest{
			Template: cfg.Template, Metadata: map[string]string{"mcp": "session"},
			Timeout: int(sandboxTimeoutFactor * cfg.KeepAlive / time.Second), OnTimeout: "kill"})
	}
	if err != nil {
		return "", err
	}
	if !s.adopt(sb.ID, s.pool, true) {
		s.dispose(mctx, cfg, sb.ID, s.pool)
		return "", errSessionEnded
	}
	return sb.ID, nil
}

// adopt makes id the session's (its own sandbox, if own), to destroy
// (or, from a pool, release) when it ends. It reports false if the
// session has ended: the caller undoes what it made.
func (s *session) adopt(id, pool string, own bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.owned[id] = pool
	if own {
		s.own = id
	}
	return true
}

// forget drops id from what the session owns (it was destroyed,
// released, or is gone); its own sandbox is made again when next needed.
func (s *session) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.owned, id)
	if s.own == id {
		s.own = ""
	}
}

// owns reports whether id is the session's, and the pool it came from.
func (s *session) owns(id string) (pool string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pool, ok = s.owned[id]
	return pool, ok
}

// ownID is the session's own sandbox, "" if it has none yet.
func (s *session) ownID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.own
}

// end marks the session ended and returns what it owned.
func (s *session) end() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	owned := maps.Clone(s.owned)
	clear(s.owned)
	s.own = ""
	return owned
}

// keepAlive pings what the session owns, so that neither a sandbox's
// inactivity timeout nor a pool's session timeout takes it while the
// session lasts. A sandbox that is gone is forgotten.
func (s *session) keepAlive(ctx context.Context, cfg Config) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.owned))
	for id := range s.owned {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.c.Ping(pctx, id)
		cancel()
		switch {
		case isNotFound(err):
			s.forget(id)
		case err != nil && ctx.Err() == nil:
			cfg.Log.Warn("mcp: keepalive of a session's sandbox", "sandbox", id, "err", err)
		}
	}
}

// dispose destroys a sandbox the session made, or releases one it
// acquired from a pool. One already gone is fine.
func (s *session) dispose(ctx context.Context, cfg Config, id, pool string) {
	var err error
	if pool == "" {
		err = s.c.DeleteSandbox(ctx, id)
	} else {
		_, err = s.c.Release(ctx, id, false)
	}
	var ae *client.APIError
	released := pool != "" && errors.As(err, &ae) && ae.Code == "conflict" // by the model, or the pool
	if err != nil && !isNotFound(err) && !released {
		cfg.Log.Warn("mcp: a session's sandbox could not be disposed of", "sandbox", id, "pool", pool, "err", err)
	}
}

// cleanup disposes of everything the session owned. It runs when the
// session has ended, on a context of its own: a server shutting down
// still finishes it.
func (s *session) cleanup(cfg Config) {
	defer close(s.cleaned)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), cleanupTimeout)
	defer cancel()
	for id, pool := range s.end() {
		s.dispose(ctx, cfg, id, pool)
	}
}
