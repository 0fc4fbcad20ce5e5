package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
)

// Client talks to one sandbox's agent. Every operation dials its own
// connection, except pings and resets, which reuse a few kept open (a
// dial is most of a ping's cost).
type Client struct {
	// Dial opens a connection to the agent.
	Dial func(ctx context.Context) (net.Conn, error)

	mu   sync.Mutex
	idle []*conn
}

// maxIdle is how many connections a Client keeps for pings and resets.
const maxIdle = 2

// CloseIdle closes the connections kept open (the agent was restarted).
func (cl *Client) CloseIdle() {
	cl.mu.Lock()
	idle := cl.idle
	cl.idle = nil
	cl.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// short sends a request with a single reply on a kept connection when
// there is one, else on a new one it then keeps. A kept connection that
// fails (the agent restarted, or is an older one that serves one request
// per connection) is dropped and the request sent once more on a new one.
func (cl *Client) short(ctx context.Context, req request) (reply, error) {
	cl.mu.Lock()
	var c *conn
	if n := len(cl.idle); n > 0 {
		c, cl.idle = cl.idle[n-1], cl.idle[:n-1]
	}
	cl.mu.Unlock()
	if c != nil {
		rep, err := cl.roundTrip(ctx, c, req)
		if err == nil || rep.Error != nil {
			return rep, err // answered
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	nc, err := cl.Dial(ctx)
	if err != nil {
		return reply{}, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	rep, err := cl.roundTrip(ctx, newConn(nc), req)
	if err != nil && ctx.Err() == nil {
		var ue *errdefs.UserError
		if !errors.As(err, &ue) {
			err = fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
	}
	return rep, err
}

// roundTrip sends req on c and reads its reply; c is kept for later if all
// went well, else closed.
func (cl *Client) roundTrip(ctx context.Context, c *conn, req request) (reply, error) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	var rep reply
	err := c.sendJSON(frameRequest, req)
	if err == nil {
		err = c.recvJSON(frameReply, &rep)
	}
	if !stop() || err != nil {
		c.Close()
		if err == nil {
			err = ctx.Err()
		}
		return reply{}, err
	}
	if rep.Error != nil {
		c.Close()
		return rep, wireToErr(rep.Error)
	}
	cl.mu.Lock()
	if len(cl.idle) < maxIdle {
		cl.idle = append(cl.idle, c)
		c = nil
	}
	cl.mu.Unlock()
	if c != nil {
		c.Close()
	}
	return rep, nil
}

// ErrUnreachable wraps failures to reach the agent at all: the sandbox is
// broken, not the request.
var ErrUnreachable = errors.New("agent unreachable")

// ErrProcessLimit: the sandbox runs as many processes as its pids limit
// allows, so no new one can start. Not the caller's mistake, and not a
// broken sandbox: kill processes (or wait) and try again.
var ErrProcessLimit = errdefs.New(errdefs.ErrExhausted, "resource_exhausted", "process limit reached")

// ErrPortClosed: nothing listens on the port asked for inside the
// sandbox (yet: a server may be starting). Not a broken sandbox.
var ErrPortClosed = errdefs.New(errdefs.ErrUnavailable, "port_closed", "port closed")

func (cl *Client) open(ctx context.Context, req request) (*conn, reply, func() bool, error) {
	nc, err := cl.Dial(ctx)
	if err != nil {
		return nil, reply{}, nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	c := newConn(nc)
	// Cancel the operation by closing the connection. The caller stops
	// the hook (and owns the connection) once open succeeds.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	fail := func(err error) (*conn, reply, func() bool, error) {
		stop()
		nc.Close()
		return nil, reply{}, nil, err
	}
	if err := c.sendJSON(frameRequest, req); err != nil {
		return fail(cl.ioErr(ctx, err))
	}
	var rep reply
	if err := c.recvJSON(frameReply, &rep); err != nil {
		return fail(cl.ioErr(ctx, err))
	}
	if rep.Error != nil {
		return fail(wireToErr(rep.Error))
	}
	return c, rep, stop, nil
}

// KillAll kills every process of the sandbox but the agent and returns
// how many there were.
func (cl *Client) KillAll(ctx context.Context) (int, error) {
	rep, err := cl.call(ctx, request{Op: "killall"})
	return int(rep.N), err
}

// ioErr prefers the context's error when the context ended the call.
func (cl *Client) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}

func wireToErr(e *wireError) error {
	kind := errdefs.ErrInvalid
	switch e.Code {
	case codeNotFound:
		kind = errdefs.ErrNotFound
	case codeExists:
		kind = errdefs.ErrExists
	case codePermission:
		kind = errdefs.ErrPermission
	case codeExhausted:
		kind = ErrProcessLimit
	case codePortClosed:
		kind = ErrPortClosed
	case codeInternal:
		return fmt.Errorf("agent: %s", e.Msg)
	}
	return &errdefs.UserError{Kind: kind, Msg: e.Msg}
}

// call runs a request with a single reply.
func (cl *Client) call(ctx context.Context, req request) (reply, error) {
	c, rep, stop, err := cl.open(ctx, req)
	if err != nil {
		return rep, err
	}
	stop()
	c.Close()
	return rep, nil
}

// Ping is one round trip to the agent.
func (cl *Client) Ping(ctx context.Context) error {
	_, err := cl.short(ctx, request{Op: "ping"})
	return err
}

// Reset ends a session: the agent kills every other process and empties
// /dev/shm and /dev/mqueue. dirty names what is left that only a restart
// of the sandbox clears ("" if nothing).
func (cl *Client) Reset(ctx context.Context) (dirty string, err error) {
	rep, err := cl.short(ctx, request{Op: "reset"})
	return rep.Dirty, err
}

// Exec starts a process.
func (cl *Client) Exec(ctx context.Context, spec proc.Spec, stdio proc.Stdio) (*Process, error) {
	cmd := spec.Cmd
	if spec.Shell != "" {
		if len(cmd) > 0 {
			return nil, errdefs.Userf(errdefs.ErrInvalid, "give either a command or a shell line, not both")
		}
		cmd = []string{"/bin/sh", "-c", spec.Shell}
	}
	if len(cmd) == 0 {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "no command given")
	}
	if spec.Timeout < 0 {
		return nil, errdefs.Userf(errdefs.ErrInvalid, "timeout must not be negative")
	}
	req := request{Op: "exec", Cmd: cmd, Env: spec.Env, Cwd: spec.Cwd, User: spec.User,
		TimeoutMs: spec.Timeout.Milliseconds(), Background: spec.Background, Stdin: stdio.Stdin != nil,
		NoStdin: spec.NoStdin, Tag: spec.Tag}
	if spec.PTY != nil {
		req.PTY = &termSize{Rows: spec.PTY.Rows, Cols: spec.PTY.Cols}
	}
	return cl.stream(ctx, req, stdio)
}

// Attach follows a process started earlier, replaying the output it kept
// (a background process's last 1 MiB) first.
func (cl *Client) Attach(ctx context.Context, procID string, stdio proc.Stdio) (*Process, error) {
	return cl.stream(ctx, request{Op: "attach", Proc: procID}, stdio)
}

// AttachLive follows a process from now on, without the output it kept.
func (cl *Client) AttachLive(ctx context.Context, procID string, stdio proc.Stdio) (*Process, error) {
	return cl.stream(ctx, request{Op: "attach", Proc: procID, Live: true}, stdio)
}

// ResizePTY gives a process's terminal a new size.
func (cl *Client) ResizePTY(ctx context.Context, procID string, size proc.Size) error {
	_, err := cl.call(ctx, request{Op: "resize", Proc: procID, PTY: &termSize{Rows: size.Rows, Cols: size.Cols}})
	return err
}

func (cl *Client) stream(ctx context.Context, req request, stdio proc.Stdio) (*Process, error) {
	// The process outlives this call: its stream is bounded by Close, not
	// by ctx, except while the request is being made.
	c, rep, stop, err := cl.open(ctx, req)
	if err != nil {
		return nil, err
	}
	stop()
	p := &Process{c: c, id: rep.Proc, pid: rep.Pid, done: make(chan struct{})}
	go p.read(stdio.Stdout, stdio.Stderr)
	if stdio.Stdin != nil {
		go p.feed(stdio.Stdin)
	}
	return p, nil
}

// Processes lists tracked processes.
func (cl *Client) Processes(ctx context.Context) ([]proc.Info, error) {
	rep, err := cl.call(ctx, request{Op: "ps"})
	if err != nil {
		return nil, err
	}
	out := make([]proc.Info, 0, len(rep.Procs))
	for _, p := range rep.Procs {
		pi := proc.Info{ID: p.ID, Pid: p.Pid, Tag: p.Tag, Cmd: p.Cmd, Cwd: p.Cwd, PTY: p.PTY, Background: p.Background,
			Running: p.Running, StartedAt: time.Unix(0, p.StartedAt).UTC()}
		if p.Exit != nil {
			pi.Exit = &proc.ExitStatus{Code: p.Exit.Code, Signal: p.Exit.Signal, TimedOut: p.Exit.TimedOut}
		}
		out = append(out, pi)
	}
	return out, nil
}

// Signal sends sig to a tracked process.
func (cl *Client) Signal(ctx context.Context, procID string, sig syscall.Signal) error {
	_, err := cl.call(ctx, request{Op: "signal", Proc: procID, Signal: int(sig)})
	return err
}

// Process is the host's end of a process stream.
type Process struct {
	c    *conn
	id   string
	pid  int
	done chan struct{}

	mu     sync.Mutex
	exit   *proc.ExitStatus
	err    error
	closed bool
}

func (p *Process) ID() string { return p.id }
func (p *Process) Pid() int   { return p.pid }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return errdefs.Userf(errdefs.ErrInvalid, "signal %d out of range", sig)
	}
	return p.c.send(frameSignal, []byte{byte(sig)})
}

// Wait returns the exit status once the process has exited and all of its
// output has been written to the caller's writers.
func (p *Process) Wait() (proc.ExitStatus, error) {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit != nil {
		return *p.exit, nil
	}
	return proc.ExitStatus{}, p.err
}

// Close drops the stream; the agent kills a foreground process.
func (p *Process) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.c.Close()
}

func (p *Process) read(stdout, stderr io.Writer) {
	defer close(p.done)
	defer p.c.Close()
	var buf []byte
	for {
		typ, b, err := p.c.recv(buf)
		if err != nil {
			p.mu.Lock()
			if p.closed {
				p.err = errors.New("process stream closed")
			} else {
				p.err = fmt.Errorf("%w: stream ended before the process did: %v", ErrUnreachable, err)
			}
			p.mu.Unlock()
			return
		}
		buf = b[:0]
		switch typ {
		case frameStdout:
			if stdout != nil {
				_, _ = stdout.Write(b) // a failing writer loses output, not the process
			}
		case frameStderr:
			if stderr != nil {
				_, _ = stderr.Write(b) // likewise
			}
		case frameExit:
			var st exitStatus
			if err := json.Unmarshal(b, &st); err != nil {
				p.mu.Lock()
				p.err = fmt.Errorf("agent: bad exit frame: %v", err)
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.exit = &proc.ExitStatus{Code: st.Code, Signal: st.Signal, TimedOut: st.TimedOut}
			p.mu.Unlock()
			return
		}
	}
}

func (p *Process) feed(r io.Reader) {
	buf := make([]byte, chunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if p.c.send(frameStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = p.c.send(frameStdinEOF, nil) // the stream may be gone already
			return
		}
	}
}
