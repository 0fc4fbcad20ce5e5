package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sandpool/sandpool/internal/proc"
)

// Server is the agent: it runs processes and serves files for the host.
type Server struct {
	spawner *spawner
	log     *slog.Logger
	// etc is where passwd and group are read from ("/etc" in a sandbox).
	etc      string
	defaults Defaults
	// devices are the device nodes /dev holds beside its own (SetDevices).
	devices map[string]bool

	mu     sync.Mutex
	procs  map[string]*process
	nextID int
}

// Options configure a Server.
type Options struct {
	// HardenSpawner runs once on the thread that starts every process:
	// drop capabilities, set no_new_privs, load seccomp.
	HardenSpawner func() error
	Log           *slog.Logger
	// Etc overrides "/etc" (tests).
	Etc string
	// Defaults fill what requests leave out (a template's user, env, cwd).
	Defaults Defaults
}

// NewServer starts the spawner and reaper.
func NewServer(opts Options) (*Server, error) {
	sp, err := startSpawner(opts.HardenSpawner)
	if err != nil {
		return nil, fmt.Errorf("harden spawner: %w", err)
	}
	s := &Server{spawner: sp, log: opts.Log, etc: opts.Etc, defaults: opts.Defaults, procs: map[string]*process{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if s.etc == "" {
		s.etc = "/etc"
	}
	return s, nil
}

// Serve accepts connections until l fails.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		go s.handle(newConn(c))
	}
}

func (s *Server) handle(c *conn) {
	defer c.Close()
	var req request
	// Short requests (ping, reset) may follow each other on one connection,
	// which the host keeps for them; any other ends it.
	for {
		if err := c.recvJSON(frameRequest, &req); err != nil {
			return
		}
		var err error
		switch req.Op {
		case "ping":
			err = c.sendJSON(frameReply, reply{})
		case "reset":
			err = s.reset(c)
		default:
			s.handleOne(c, &req)
			return
		}
		if err != nil {
			return
		}
	}
}

// handleOne serves one request that owns its connection.
func (s *Server) handleOne(c *conn, req *request) {
	s.applyDefaults(req)
	var err error
	switch req.Op {
	case "exec":
		err = s.exec(c, req)
	case "attach":
		err = s.attach(c, req)
	case "ps":
		err = c.sendJSON(frameReply, reply{Procs: s.list()})
	case "signal":
		err = s.signal(c, req)
	case "killall":
		err = s.killAll(c)
	case "stdin":
		err = s.writeStdin(c, req)
	case "read":
		err = s.readFile(c, req)
	case "write":
		err = s.writeFile(c, req)
	case "list", "stat", "mkdir", "remove", "rename":
		err = s.fileOp(c, req)
	case "resize":
		err = s.resize(c, req)
	case "watch":
		err = s.watch(c, req)
	case "dial":
		err = s.dial(c, req)
	default:
		err = replyErr(c, codeInvalid, "unknown operation %q", req.Op)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		s.log.Debug("request failed", "op", req.Op, "err", err)
	}
}

func replyErr(c *conn, code, format string, args ...any) error {
	return c.sendJSON(frameReply, reply{Error: &wireError{Code: code, Msg: fmt.Sprintf(format, args...)}})
}

// lookup finds a tracked process by its id, or by "pid:N" or "tag:T"
// (the running one first, then the newest).
func (s *Server) lookup(ref string) *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[ref]; p != nil {
		return p
	}
	match := func(p *process) bool { return false }
	if v, ok := strings.CutPrefix(ref, "pid:"); ok {
		pid, err := strconv.Atoi(v)
		if err != nil {
			return nil
		}
		match = func(p *process) bool { return p.pid == pid }
	} else if v, ok := strings.CutPrefix(ref, "tag:"); ok && v != "" {
		match = func(p *process) bool { return p.tag == v }
	}
	var best *process
	for _, p := range s.procs {
		if !match(p) {
			continue
		}
		if best == nil || p.isRunning() && !best.isRunning() ||
			p.isRunning() == best.isRunning() && p.started.After(best.started) {
			best = p
		}
	}
	return best
}

func (s *Server) attach(c *conn, req *request) error {
	p := s.lookup(req.Proc)
	if p == nil {
		return replyErr(c, codeNotFound, "no process %q", req.Proc)
	}
	if err := c.sendJSON(frameReply, reply{Proc: p.id, Pid: p.pid}); err != nil {
		return err
	}
	sub := newSubscriber(c)
	p.subscribe(sub, !req.Live)
	return s.follow(c, p, sub)
}

func (s *Server) signal(c *conn, req *request) error {
	p := s.lookup(req.Proc)
	if p == nil {
		return replyErr(c, codeNotFound, "no process %q", req.Proc)
	}
	if req.Signal <= 0 || req.Signal > 64 {
		return replyErr(c, codeInvalid, "signal %d out of range", req.Signal)
	}
	if err := p.signal(syscall.Signal(req.Signal)); err != nil {
		return replyErr(c, codeInternal, "signal: %v", err)
	}
	return c.sendJSON(frameReply, reply{})
}

// writeStdin copies data frames to a process's stdin.
func (s *Server) writeStdin(c *conn, req *request) error {
	p := s.lookup(req.Proc)
	if p == nil {
		return replyErr(c, codeNotFound, "no process %q", req.Proc)
	}
	if p.stdin == nil {
		return replyErr(c, codeInvalid, "process %s was started without stdin", req.Proc)
	}
	if req.EOF && p.pty != nil {
		return replyErr(c, codeInvalid, "process %s runs on a terminal, whose input does not end (send Ctrl-D, 0x04)", req.Proc)
	}
	if err := c.sendJSON(frameReply, reply{}); err != nil {
		return err
	}
	var n int64
	var werr error
	for {
		typ, b, err := c.recv(nil)
		if err != nil {
			return err
		}
		if typ == frameDataEnd {
			break
		}
		if typ != frameData {
			return replyErr(c, codeInvalid, "protocol: unexpected frame %q", typ)
		}
		if werr == nil {
			var m int
			m, werr = p.stdin.Write(b)
			n += int64(m)
		}
	}
	if werr != nil {
		return replyErr(c, codeInvalid, "process %s does not take input any more: %v", req.Proc, werr)
	}
	if req.EOF {
		p.closeStdin()
	}
	return c.sendJSON(frameReply, reply{N: n})
}

// resize gives a process's terminal a new size.
func (s *Server) resize(c *conn, req *request) error {
	p := s.lookup(req.Proc)
	if p == nil {
		return replyErr(c, codeNotFound, "no process %q", req.Proc)
	}
	if p.pty == nil {
		return replyErr(c, codeInvalid, "process %s does not run on a terminal", req.Proc)
	}
	if req.PTY == nil {
		return replyErr(c, codeInvalid, "no terminal size given")
	}
	if err := setTermSize(p.pty, *req.PTY); err != nil {
		if !p.isRunning() {
			return replyErr(c, codeInvalid, "process %s has exited", req.Proc)
		}
		return replyErr(c, codeInvalid, "%v", err)
	}
	return c.sendJSON(frameReply, reply{})
}

func (s *Server) list() []processInfo {
	s.mu.Lock()
	procs := make([]*process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	out := make([]processInfo, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt < out[j].StartedAt })
	return out
}

func buildEnv(acc account, extra map[string]string) ([]string, error) {
	m := map[string]string{
		"PATH":    defaultPath,
		"HOME":    acc.Home,
		"USER":    acc.Name,
		"LOGNAME": acc.Name,
		"SHELL":   acc.Shell,
		"LANG":    "C.UTF-8",
	}
	if err := proc.CheckEnv(extra); err != nil {
		return nil, err
	}
	for k, v := range extra {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env, nil
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// lookPath finds the program to run the way a shell would.
func lookPath(name, cwd, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !strings.HasPrefix(name, "/") {
			name = cwd + "/" + name
		}
		if err := isExecutable(name); err != nil {
			return "", fmt.Errorf("%s: %v", name, err)
		}
		return name, nil
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if !strings.HasPrefix(p, "/") {
			p = cwd + "/" + p
		}
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command not found: %s", name)
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if os.IsNotExist(err) {
			return errors.New("no such file")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	if st.Mode().Perm()&0o111 == 0 {
		return errors.New("not executable")
	}
	return nil
}
