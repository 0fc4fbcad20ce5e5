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
	"time"

	"github.com/sandpool/sandpool/internal/fsys"
)

// Server is the agent: it runs processes and serves files for the host.
type Server struct {
	spawner *spawner
	log     *slog.Logger
	// etc is where passwd and group are read from ("/etc" in a sandbox).
	etc string

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
}

// NewServer starts the spawner and reaper.
func NewServer(opts Options) (*Server, error) {
	sp, err := startSpawner(opts.HardenSpawner)
	if err != nil {
		return nil, fmt.Errorf("harden spawner: %w", err)
	}
	s := &Server{spawner: sp, log: opts.Log, etc: opts.Etc, procs: map[string]*process{}}
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

// defaultPath is PATH unless the caller sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (s *Server) exec(c *conn, req *request) error {
	if len(req.Cmd) == 0 || req.Cmd[0] == "" {
		return replyErr(c, codeInvalid, "no command given")
	}
	acc, err := lookupUser(s.etc, req.User)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	env, err := buildEnv(acc, req.Env)
	if err != nil {
		return replyErr(c, codeInvalid, "%v", err)
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = acc.Home
		if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
			cwd = "/"
		}
	} else {
		if cwd, err = fsys.CleanPath(cwd); err != nil {
			return replyErr(c, codeInvalid, "cwd: %v", err)
		}
		st, err := os.Stat(cwd)
		if err != nil {
			return replyErr(c, codeNotFound, "working directory %s does not exist", cwd)
		}
		if !st.IsDir() {
			return replyErr(c, codeInvalid, "working directory %s is not a directory", cwd)
		}
	}
	argv0, err := lookPath(req.Cmd[0], cwd, envValue(env, "PATH"))
	if err != nil {
		return replyErr(c, codeNotFound, "%v", err)
	}

	var stdinR *os.File
	var stdinW *os.File
	// A background process keeps a stdin that attachers can write to.
	if req.Stdin || req.Background {
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			return replyErr(c, codeInternal, "stdin pipe: %v", err)
		}
	} else if stdinR, err = os.Open(os.DevNull); err != nil {
		return replyErr(c, codeInternal, "open %s: %v", os.DevNull, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		return replyErr(c, codeInternal, "stdout pipe: %v", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		outR.Close()
		outW.Close()
		return replyErr(c, codeInternal, "stderr pipe: %v", err)
	}

	// Subscribed before it starts, so no output is lost however fast
	// the process is.
	sub := newSubscriber(c)
	p := &process{
		cmd: req.Cmd, background: req.Background, started: time.Now(), stdin: stdinW,
		subs: map[*subscriber]struct{}{sub: {}}, done: make(chan struct{}),
		status: make(chan syscall.WaitStatus, 1),
	}
	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{stdinR.Fd(), outW.Fd(), errW.Fd()},
		Sys: &syscall.SysProcAttr{
			Setsid:     true, // its own session and group: see family.go
			Credential: &syscall.Credential{Uid: uint32(acc.UID), Gid: uint32(acc.GID), Groups: acc.Groups},
		},
	}
	pid, err := s.spawner.spawn(argv0, req.Cmd, attr, func(ws syscall.WaitStatus) { p.status <- ws })
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		code := codeInvalid
		switch {
		case errors.Is(err, syscall.ENOENT):
			code = codeNotFound
		case errors.Is(err, syscall.EAGAIN):
			// The pids limit: the sandbox is fine, just full.
			return replyErr(c, codeExhausted, "cannot run %s: the sandbox runs as many processes as its limit allows (kill some, or kill them all)", req.Cmd[0])
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			code = codePermission
		}
		return replyErr(c, code, "cannot run %s: %v", req.Cmd[0], err)
	}
	p.pid = pid
	s.mu.Lock()
	s.nextID++
	p.id = "p" + strconv.Itoa(s.nextID)
	s.procs[p.id] = p
	s.mu.Unlock()

	go s.supervise(p, outR, errR, time.Duration(req.TimeoutMs)*time.Millisecond)

	if err := c.sendJSON(frameReply, reply{Proc: p.id, Pid: pid}); err != nil {
		p.unsubscribe(sub)
		if !p.background {
			p.killFamily() // the caller is gone; a foreground process dies with it
		}
		return err
	}
	return s.follow(c, p, sub)
}

// supervise pumps output, applies the timeout, and records the exit once
// the process has exited and its pipes are drained (or a short grace has
// passed: a child that keeps the pipes open must not hold the exit back).
func (s *Server) supervise(p *process, outR, errR *os.File, timeout time.Duration) {
	var pumps sync.WaitGroup
	pump := func(f *os.File, typ byte) {
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				p.emit(typ, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(outR, frameStdout)
	go pump(errR, frameStderr)

	var timedOut bool
	var tmu sync.Mutex
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() {
			tmu.Lock()
			timedOut = true
			tmu.Unlock()
			p.killFamily() // with what it started in the background
		})
		defer t.Stop()
	}
	ws := <-p.status
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainGrace):
		// Someone still holds the pipes; stop reading.
		outR.SetReadDeadline(time.Now())
		errR.SetReadDeadline(time.Now())
		<-drained
	}
	outR.Close()
	errR.Close()
	if p.stdin != nil {
		p.stdin.Close()
	}
	tmu.Lock()
	st := exitFromWait(ws, timedOut)
	tmu.Unlock()
	if !p.background {
		// Out of the table before the exit is told: whoever hears it and
		// lists the processes must not find it.
		s.mu.Lock()
		delete(s.procs, p.id)
		s.mu.Unlock()
	}
	p.finish(st)
	s.retire(p)
}

// retire drops a finished process from the table: foreground ones at once,
// background ones once more than keepExited have finished.
func (s *Server) retire(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !p.background {
		delete(s.procs, p.id)
		return
	}
	var exited []*process
	for _, q := range s.procs {
		if q.background {
			select {
			case <-q.done:
				exited = append(exited, q)
			default:
			}
		}
	}
	if len(exited) <= keepExited {
		return
	}
	sort.Slice(exited, func(i, j int) bool { return exited[i].started.Before(exited[j].started) })
	for _, q := range exited[:len(exited)-keepExited] {
		delete(s.procs, q.id)
	}
}

// follow streams p's output to c and feeds c's stdin and signal frames to
// p until the exit is sent or the host goes away. A foreground process
// whose host goes away is killed.
func (s *Server) follow(c *conn, p *process, sub *subscriber) error {
	sub.start()

	stdin := make(chan []byte, 16)
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		for b := range stdin {
			if b == nil {
				if p.stdin != nil {
					p.stdin.Close()
				}
				continue
			}
			if p.stdin != nil {
				_, _ = p.stdin.Write(b) // the process may have closed its stdin; drop the bytes
			}
		}
	}()

	hostGone := make(chan struct{})
	go func() {
		defer close(hostGone)
		defer close(stdin)
		for {
			typ, b, err := c.recv(nil)
			if err != nil {
				return
			}
			switch typ {
			case frameStdin:
				stdin <- b
			case frameStdinEOF:
				stdin <- nil
			case frameSignal:
				if len(b) == 1 {
					_ = p.signal(syscall.Signal(b[0])) // a gone process needs no signal
				}
			}
		}
	}()

	select {
	case <-sub.done:
		return nil
	case <-hostGone:
		p.unsubscribe(sub)
		if !p.background {
			p.killFamily()
		}
		<-stdinDone
		return io.EOF
	}
}

func (s *Server) lookup(id string) *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[id]
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
	p.subscribe(sub)
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
		p.stdin.Close()
	}
	return c.sendJSON(frameReply, reply{N: n})
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
	for k, v := range extra {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("invalid environment variable name %q", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("environment variable %s contains a NUL byte", k)
		}
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
