package agent

import (
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Output kept for a background process, for Attach to replay.
const (
	ringBytes   = 1 << 20
	subQueueMax = 1 << 20
	drainGrace  = 100 * time.Millisecond
	keepExited  = 64
)

// process is one process started through exec. Its output goes to every
// attached subscriber and, for a background process, into a bounded ring.
type process struct {
	id         string
	pid        int
	tag        string
	cmd        []string
	cwd        string
	background bool
	started    time.Time
	stdin      *os.File // nil unless the caller streams stdin; the terminal for a pty
	pty        *os.File // the terminal's master side, for a process on one

	mu       sync.Mutex
	ring     []chunk
	ringSize int
	subs     map[*subscriber]struct{}
	exited   bool
	exit     exitStatus
	timedOut bool
	done     chan struct{} // closed once exited and output drained

	status chan syscall.WaitStatus // from the reaper
}

type chunk struct {
	typ  byte
	data []byte
}

// emit hands one piece of output to the ring and to every subscriber, then
// waits while any subscriber is too far behind (backpressure on the pipe).
func (p *process) emit(typ byte, data []byte) {
	b := append([]byte(nil), data...)
	p.mu.Lock()
	if p.background {
		p.ring = append(p.ring, chunk{typ, b})
		p.ringSize += len(b)
		for p.ringSize > ringBytes && len(p.ring) > 1 {
			p.ringSize -= len(p.ring[0].data)
			p.ring = p.ring[1:]
		}
	}
	subs := make([]*subscriber, 0, len(p.subs))
	for s := range p.subs {
		s.push(chunk{typ, b})
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		s.waitBelow(subQueueMax)
	}
}

// subscribe attaches s, replaying the ring first if replay. A process
// that has finished already gets s its exit at once.
func (p *process) subscribe(s *subscriber, replay bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if replay {
		for _, c := range p.ring {
			s.push(c)
		}
	}
	if p.exited {
		s.finish(p.exit)
		return
	}
	p.subs[s] = struct{}{}
}

func (p *process) unsubscribe(s *subscriber) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
	s.close()
}

// finish records the exit and tells every subscriber.
func (p *process) finish(st exitStatus) {
	p.mu.Lock()
	p.exited = true
	p.exit = st
	for s := range p.subs {
		s.finish(st)
	}
	p.subs = map[*subscriber]struct{}{}
	p.mu.Unlock()
	close(p.done)
}

func (p *process) isRunning() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.exited
}

func (p *process) info() processInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	pi := processInfo{ID: p.id, Pid: p.pid, Tag: p.tag, Cmd: p.cmd, Cwd: p.cwd, PTY: p.pty != nil,
		Background: p.background, Running: !p.exited, StartedAt: p.started.UnixNano()}
	if p.exited {
		st := p.exit
		pi.Exit = &st
	}
	return pi
}

// closeStdin ends the process's input. A terminal has no end of input
// (the process reads Ctrl-D as one): it stays open until the process is
// done.
func (p *process) closeStdin() {
	if p.stdin != nil && p.pty == nil {
		p.stdin.Close()
	}
}

// signal sends sig to the process's group.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		return nil
	}
	err := unix.Kill(-p.pid, sig)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// killFamily kills the process and every process it started (see
// family.go), as a timeout or a caller that went away asks, unless it has
// exited: what a finished command left running was meant to stay.
func (p *process) killFamily() {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited {
		return
	}
	if err := killFamily(p.pid, 5*time.Second); err != nil {
		slog.Warn("kill an exec's processes", "proc", p.id, "err", err)
	}
}

func exitFromWait(ws syscall.WaitStatus, timedOut bool) exitStatus {
	st := exitStatus{TimedOut: timedOut}
	switch {
	case ws.Exited():
		st.Code = ws.ExitStatus()
	case ws.Signaled():
		st.Code = 128 + int(ws.Signal())
		st.Signal = unix.SignalName(ws.Signal())
	}
	return st
}

// subscriber queues frames for one connection and writes them from its own
// goroutine, so no process lock is held across socket I/O.
type subscriber struct {
	c    *conn
	mu   sync.Mutex
	cond *sync.Cond
	q    []chunk
	size int
	exit *exitStatus
	// closed: stop writing (connection gone or detached).
	closed bool
	done   chan struct{}
}

// newSubscriber makes a subscriber that queues until start is called (the
// reply frame must reach the host before any output does).
func newSubscriber(c *conn) *subscriber {
	s := &subscriber{c: c, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *subscriber) start() { go s.run() }

func (s *subscriber) push(c chunk) {
	s.mu.Lock()
	if !s.closed {
		s.q = append(s.q, c)
		s.size += len(c.data)
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

func (s *subscriber) finish(st exitStatus) {
	s.mu.Lock()
	s.exit = &st
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *subscriber) close() {
	s.mu.Lock()
	s.closed = true
	s.q = nil
	s.size = 0
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *subscriber) waitBelow(n int) {
	s.mu.Lock()
	for !s.closed && s.size > n {
		s.cond.Wait()
	}
	s.mu.Unlock()
}

// run writes queued output, then the exit frame, then returns. It stops
// early if the subscriber is closed or the connection fails.
func (s *subscriber) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for !s.closed && len(s.q) == 0 && s.exit == nil {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		if len(s.q) == 0 { // exit, and everything before it sent
			st := *s.exit
			s.mu.Unlock()
			_ = s.c.sendJSON(frameExit, st) // the host may be gone; nothing to do about it
			return
		}
		c := s.q[0]
		s.q = s.q[1:]
		s.size -= len(c.data)
		s.cond.Broadcast()
		s.mu.Unlock()
		if err := s.c.send(c.typ, c.data); err != nil {
			s.close()
			return
		}
	}
}
