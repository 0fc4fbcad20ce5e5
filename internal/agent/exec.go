package agent

import (
	"errors"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/internal/fsys"
)

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
	if req.PTY != nil {
		if req.PTY.Rows == 0 || req.PTY.Cols == 0 {
			return replyErr(c, codeInvalid, "terminal size %dx%d: rows and columns must be positive", req.PTY.Cols, req.PTY.Rows)
		}
		if envValue(env, "TERM") == "" {
			env = append(env, "TERM=xterm-256color")
		}
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

	// Subscribed before it starts, so no output is lost however fast
	// the process is.
	sub := newSubscriber(c)
	p := &process{
		cmd: req.Cmd, cwd: cwd, tag: req.Tag, background: req.Background, started: time.Now(),
		subs: map[*subscriber]struct{}{sub: {}}, done: make(chan struct{}),
		status: make(chan syscall.WaitStatus, 1),
	}
	pio, err := newProcIO(req, acc)
	if err != nil {
		return replyErr(c, codeInternal, "%v", err)
	}
	p.stdin, p.pty = pio.stdin, pio.pty
	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: pio.child[:],
		Sys: &syscall.SysProcAttr{
			Setsid:     true, // its own session and group: see family.go
			Credential: &syscall.Credential{Uid: uint32(acc.UID), Gid: uint32(acc.GID), Groups: acc.Groups},
		},
	}
	if pio.pty != nil {
		// The terminal becomes the session's controlling terminal (the
		// child's descriptor 0 is its end).
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
	}
	pid, err := s.spawner.spawn(argv0, req.Cmd, attr, func(ws syscall.WaitStatus) { p.status <- ws })
	pio.closeChild()
	if err != nil {
		pio.closeParent()
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

	go s.supervise(p, pio.outputs(), time.Duration(req.TimeoutMs)*time.Millisecond)

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
func (s *Server) supervise(p *process, outputs []output, timeout time.Duration) {
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
				return // EOF; EIO from a terminal whose other end is closed
			}
		}
	}
	pumps.Add(len(outputs))
	for _, o := range outputs {
		go pump(o.f, o.typ)
	}

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
		for _, o := range outputs {
			_ = o.f.SetReadDeadline(time.Now()) // pipes and terminals are pollable
		}
		<-drained
	}
	for _, o := range outputs {
		o.f.Close()
	}
	if p.stdin != nil {
		p.stdin.Close() // a terminal's master was closed just above; a second close does nothing
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
				p.closeStdin()
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
