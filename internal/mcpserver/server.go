// Package mcpserver is sandpool's Model Context Protocol front end: tools
// that let an AI agent make sandboxes, run commands and code in them, and
// move files, served over stdio (ServeStdio, for `sandpool mcp`) and over
// streamable HTTP (Handler, mounted at /mcp by `sandpool serve`).
//
// It is built only on the public client package: what an agent can do
// here, a program can do with the API.
package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// server is what both front ends share: one mcp.Server per pool name,
// and the state of the sessions using them.
type server struct {
	cfg Config
	// clientFor gives the client of a session's first call, and the
	// owner of that session ("" over stdio).
	clientFor func(*mcp.CallToolRequest) (c *client.Client, owner string, err error)

	ctx    context.Context // cancelled by close: sessions end, calls under way are cancelled
	cancel context.CancelFunc
	calls  sync.WaitGroup // tool calls under way
	wg     sync.WaitGroup // session watchers

	mu       sync.Mutex
	closed   bool
	servers  map[string]*mcp.Server // by pool name, "" for none
	sessions map[*mcp.ServerSession]*session
	byID     map[string]*session // by MCP session id
}

func newServer(cfg Config, clientFor func(*mcp.CallToolRequest) (*client.Client, string, error)) (*server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cfg: cfg.withDefaults(), clientFor: clientFor, ctx: ctx, cancel: cancel,
		servers: map[string]*mcp.Server{}, sessions: map[*mcp.ServerSession]*session{}, byID: map[string]*session{}}
	if _, err := s.serverFor(cfg.Pool); err != nil { // the tools' schemas are checked at start
		cancel()
		return nil, err
	}
	return s, nil
}

// maxServers bounds the mcp.Servers kept for pool names given in URLs;
// past it, those without sessions are dropped.
const maxServers = 256

// serverFor returns the MCP server whose sessions' sandboxes come from
// pool (none if "").
func (s *server) serverFor(pool string) (*mcp.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if srv := s.servers[pool]; srv != nil {
		return srv, nil
	}
	srv, err := s.newMCPServer(pool)
	if err != nil {
		return nil, err
	}
	if len(s.servers) >= maxServers {
		for name, old := range s.servers {
			if name != s.cfg.Pool && !hasSessions(old) {
				delete(s.servers, name)
			}
		}
	}
	s.servers[pool] = srv
	return srv, nil
}

func hasSessions(srv *mcp.Server) bool {
	for range srv.Sessions() {
		return true
	}
	return false
}

func (s *server) newMCPServer(pool string) (*mcp.Server, error) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "sandpool", Title: "sandpool sandboxes", Version: s.cfg.Version},
		&mcp.ServerOptions{
			Instructions: instructions(pool),
			Logger:       s.sdkLog(),
			// Tools only: no logging, prompts or resources.
			Capabilities: &mcp.ServerCapabilities{},
		})
	t := &tools{s: s, pool: pool}
	if err := t.register(srv); err != nil {
		return nil, err
	}
	return srv, nil
}

// sdkLog is the SDK's logger: its warnings and errors only (it tells of
// every session's start and end at info level).
func (s *server) sdkLog() *slog.Logger {
	return slog.New(atLeast{Handler: s.cfg.Log.Handler(), min: slog.LevelWarn})
}

// atLeast passes on the records of level min and above.
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (h atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h atLeast) WithAttrs(as []slog.Attr) slog.Handler {
	return atLeast{Handler: h.Handler.WithAttrs(as), min: h.min}
}

func (h atLeast) WithGroup(name string) slog.Handler {
	return atLeast{Handler: h.Handler.WithGroup(name), min: h.min}
}

func instructions(pool string) string {
	text := "sandpool runs code in isolated Linux sandboxes: each has its own files and processes, and the network " +
		"its policy allows (none, the internet, or an allowlist; the server's default unless create_sandbox says). " +
		"Tools that take a sandbox_id use this session's own sandbox when you leave it out: it is made on first use, " +
		"keeps its files between calls, and is destroyed when the session ends. " +
		"A sandbox made with create_sandbox outlives the session: destroy it with destroy_sandbox when you are done."
	if pool != "" {
		text += fmt.Sprintf(" This session's own sandbox comes from the warm pool %q, ready at once; "+
			"acquire_from_pool takes more from a pool and release gives one back.", pool)
	}
	return text
}

// errClosing is a call that came while the server shuts down.
var errClosing = errors.New("the sandpool MCP server is shutting down")

// call is one tool call: its session and a context that ends with the
// call, the session or the server.
type call struct {
	ctx context.Context
	ss  *session
	req *mcp.CallToolRequest
}

// begin starts a call: it finds (or starts) the call's session. end must
// be called when the call is done.
func (s *server) begin(ctx context.Context, req *mcp.CallToolRequest, pool string) (c *call, end func(), err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, errClosing
	}
	s.calls.Add(1)
	st := s.sessions[req.Session]
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.calls.Done()
		}
	}()
	if st == nil {
		if st, err = s.startSession(req, pool); err != nil {
			return nil, nil, err
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(st.ctx, cancel)
	return &call{ctx: cctx, ss: st, req: req}, func() {
		stop()
		cancel()
		s.calls.Done()
	}, nil
}

// startSession makes the state of the session req came in, and starts
// watching it: its sandboxes are kept alive while it lasts, and disposed
// of when it ends.
func (s *server) startSession(req *mcp.CallToolRequest, pool string) (*session, error) {
	c, owner, err := s.clientFor(req)
	if err != nil {
		return nil, err
	}
	ss := req.Session
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.sessions[ss]; st != nil { // another call was first
		return st, nil
	}
	st := newSession(s.ctx, ss.ID(), owner, c, pool)
	s.sessions[ss] = st
	if st.id != "" {
		s.byID[st.id] = st
	}
	s.wg.Go(func() { s.watch(ss, st) })
	return st, nil
}

// watch keeps a session's sandboxes alive until the session ends, then
// disposes of them.
func (s *server) watch(ss *mcp.ServerSession, st *session) {
	ended := make(chan struct{})
	s.wg.Go(func() {
		_ = ss.Wait() // how it ended does not matter here
		close(ended)
	})
	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ended:
			break loop
		case <-s.ctx.Done():
			// The server is closing: the session's calls are cancelled
			// (st.ctx is a child), so Close does not wait long for them.
			_ = ss.Close() // how it closed does not matter here
			<-ended
			break loop
		case <-tick.C:
			st.keepAlive(st.ctx, s.cfg)
		}
	}
	st.cancel()
	st.cleanup(s.cfg)
	s.mu.Lock()
	delete(s.sessions, ss)
	if s.byID[st.id] == st {
		delete(s.byID, st.id)
	}
	s.mu.Unlock()
}

// session returns the state of the session with this MCP id, if it has
// any (it has once a tool was called).
func (s *server) session(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

func (s *server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// close ends every session, waits for the calls under way, and disposes
// of every session's sandboxes.
func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	servers := make([]*mcp.Server, 0, len(s.servers))
	for _, srv := range s.servers {
		servers = append(servers, srv)
	}
	s.mu.Unlock()
	s.cancel()
	for _, srv := range servers {
		for ss := range srv.Sessions() {
			_ = ss.Close() // sessions without state end here; how does not matter
		}
	}
	s.calls.Wait()
	s.wg.Wait()
}

// ServeStdio serves one MCP session over r and w (an agent's pipes to
// `sandpool mcp`) with c, until r ends or ctx is cancelled. Then the
// session's sandboxes are destroyed or given back to their pool.
func ServeStdio(ctx context.Context, c *client.Client, cfg Config, r io.Reader, w io.Writer) error {
	s, err := newServer(cfg, func(*mcp.CallToolRequest) (*client.Client, string, error) { return c, "", nil })
	if err != nil {
		return err
	}
	defer s.close()
	srv, err := s.serverFor(cfg.Pool)
	if err != nil {
		return err
	}
	err = srv.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(r), Writer: nopWriteCloser{w}})
	if ctx.Err() != nil {
		return nil // stopped by a signal: a normal end
	}
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
