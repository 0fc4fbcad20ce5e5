package linux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// agentFor returns a client for a running sandbox, or ErrConflict if it
// is not running.
func (r *Runtime) agentFor(id string) (*agent.Client, *sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, nil, err
	}
	switch s := sb.getStatus(); s {
	case runtime.StatusRunning:
	case runtime.StatusBroken:
		return nil, nil, &errdefs.StateError{Sandbox: id, Err: errors.New("its PID 1 is gone")}
	default:
		return nil, nil, errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, s)
	}
	return sb.agentClient(r.sandboxDir(id)), sb, nil
}

// agentClient is the sandbox's agent client, kept so that its open
// connections for pings and resets are reused.
func (sb *sandbox) agentClient(dir string) *agent.Client {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.agent == nil {
		sb.agent = &agent.Client{Dial: func(ctx context.Context) (net.Conn, error) { return dialAgent(ctx, dir) }}
	}
	return sb.agent
}

// dialAgent connects to the agent socket in dir: by its path when that
// fits in a socket address, else through a descriptor of dir (so long
// data directory paths work).
func dialAgent(ctx context.Context, dir string) (net.Conn, error) {
	var dl net.Dialer
	sock := dir + "/agent.sock"
	if len(sock) < maxSocketPath {
		return dl.DialContext(ctx, "unix", sock)
	}
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return dl.DialContext(ctx, "unix", fdPath(int(d.Fd()))+"/agent.sock")
}

// maxSocketPath is what fits in sockaddr_un's sun_path with its NUL.
const maxSocketPath = 107

// agentErr turns a failure to reach a sandbox's agent into a StateError,
// unless the sandbox stopped running meanwhile (then it is a conflict).
func (r *Runtime) agentErr(sb *sandbox, err error) error {
	if err == nil || !errors.Is(err, agent.ErrUnreachable) {
		return err
	}
	sb.mu.Lock()
	s, stopping, gone := sb.status, sb.stopping, sb.gone
	sb.mu.Unlock()
	switch {
	case gone:
		return errdefs.Userf(errdefs.ErrNotFound, "sandbox %s was destroyed", sb.st.ID)
	case stopping:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is being stopped", sb.st.ID)
	case s != runtime.StatusRunning:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", sb.st.ID, s)
	}
	return &errdefs.StateError{Sandbox: sb.st.ID, Err: err}
}

// Ping is one round trip to the sandbox's agent: a health check.
func (r *Runtime) Ping(ctx context.Context, id string) error {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return err
	}
	return r.agentErr(sb, cl.Ping(ctx))
}

// Exec starts a process in the sandbox.
func (r *Runtime) Exec(ctx context.Context, id string, spec proc.Spec, stdio proc.Stdio) (proc.Process, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return nil, err
	}
	cg := r.cg.group(id)
	ooms := cg.oomKills()
	p, err := cl.Exec(ctx, spec, stdio)
	if errors.Is(err, agent.ErrProcessLimit) {
		return nil, fmt.Errorf("%w (the limit is %d processes and threads)", err, sb.st.Limits.Pids)
	}
	if err != nil {
		return nil, r.agentErr(sb, err)
	}
	return &process{Process: p, r: r, sb: sb, cg: cg, ooms: ooms}, nil
}

// Attach follows a background process.
func (r *Runtime) Attach(ctx context.Context, id, procID string, stdio proc.Stdio) (proc.Process, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return nil, err
	}
	cg := r.cg.group(id)
	ooms := cg.oomKills()
	p, err := cl.Attach(ctx, procID, stdio)
	if err != nil {
		return nil, r.agentErr(sb, err)
	}
	return &process{Process: p, r: r, sb: sb, cg: cg, ooms: ooms}, nil
}

// AttachLive follows a process from now on, without its kept output.
func (r *Runtime) AttachLive(ctx context.Context, id, procID string, stdio proc.Stdio) (proc.Process, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return nil, err
	}
	cg := r.cg.group(id)
	ooms := cg.oomKills()
	p, err := cl.AttachLive(ctx, procID, stdio)
	if err != nil {
		return nil, r.agentErr(sb, err)
	}
	return &process{Process: p, r: r, sb: sb, cg: cg, ooms: ooms}, nil
}

// ResizePTY gives a process's terminal a new size.
func (r *Runtime) ResizePTY(ctx context.Context, id, procID string, size proc.Size) error {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return err
	}
	return r.agentErr(sb, cl.ResizePTY(ctx, procID, size))
}

// DialPort connects to a TCP port on the sandbox's loopback through its
// agent.
func (r *Runtime) DialPort(ctx context.Context, id string, port int) (net.Conn, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return nil, err
	}
	c, err := cl.DialPort(ctx, port)
	return c, r.agentErr(sb, err)
}

// process adds what only the host knows to the agent's process: whether
// the memory limit killed it, and whether the sandbox broke meanwhile.
type process struct {
	*agent.Process
	r    *Runtime
	sb   *sandbox
	cg   *cgroup
	ooms int64
}

func (p *process) Wait() (proc.ExitStatus, error) {
	st, err := p.Process.Wait()
	if err != nil {
		return st, p.r.agentErr(p.sb, err)
	}
	if st.Signal == "SIGKILL" && p.cg.oomKills() > p.ooms {
		st.OOMKilled = true
	}
	return st, nil
}

// Processes lists the processes the agent tracks.
func (r *Runtime) Processes(ctx context.Context, id string) ([]proc.Info, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return nil, err
	}
	ps, err := cl.Processes(ctx)
	return ps, r.agentErr(sb, err)
}

// Signal sends sig to a tracked process.
func (r *Runtime) Signal(ctx context.Context, id, procID string, sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return errdefs.Userf(errdefs.ErrInvalid, "signal %d out of range", sig)
	}
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return err
	}
	return r.agentErr(sb, cl.Signal(ctx, procID, sig))
}

// KillAll kills every process of the sandbox but its agent.
func (r *Runtime) KillAll(ctx context.Context, id string) (int, error) {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return 0, err
	}
	n, err := cl.KillAll(ctx)
	return n, r.agentErr(sb, err)
}

// WriteStdin copies r to a tracked process's stdin.
func (r *Runtime) WriteStdin(ctx context.Context, id, procID string, src io.Reader, closeStdin bool) error {
	cl, sb, err := r.agentFor(id)
	if err != nil {
		return err
	}
	return r.agentErr(sb, cl.WriteStdin(ctx, procID, src, closeStdin))
}

// Files gives access to the sandbox's filesystem through its agent.
func (r *Runtime) Files(id string) fsys.Files {
	return fsys.Checked(func() (fsys.Files, func(error) error, error) {
		cl, sb, err := r.agentFor(id)
		if err != nil {
			return nil, nil, err
		}
		return cl.Files(), func(err error) error { return r.agentErr(sb, err) }, nil
	})
}

// Freeze stops every process of a running sandbox, keeping its memory.
func (r *Runtime) Freeze(ctx context.Context, id string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	switch s := sb.getStatus(); s {
	case runtime.StatusFrozen:
		return nil
	case runtime.StatusRunning:
	default:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, s)
	}
	if err := r.cg.group(id).freeze(ctx); err != nil {
		return fmt.Errorf("freeze sandbox %s: %w", id, err)
	}
	sb.setStatus(runtime.StatusFrozen)
	return nil
}

// Thaw lets a frozen sandbox run again.
func (r *Runtime) Thaw(ctx context.Context, id string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	switch s := sb.getStatus(); s {
	case runtime.StatusRunning:
		return nil
	case runtime.StatusFrozen:
	default:
		return errdefs.Userf(errdefs.ErrConflict, "sandbox %s is %s", id, s)
	}
	if err := r.cg.group(id).thaw(); err != nil {
		return fmt.Errorf("thaw sandbox %s: %w", id, err)
	}
	sb.setStatus(runtime.StatusRunning)
	return nil
}

// Stop kills every process and unmounts everything but keeps the writable
// layer; Start boots the sandbox again on it.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	sb, err := r.lookup(id)
	if err != nil {
		return err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	if sb.getStatus() == runtime.StatusStopped {
		return nil
	}
	if err := r.teardown(ctx, sb, false); err != nil {
		sb.setStatus(runtime.StatusBroken)
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	return nil
}

// Start boots a stopped (or broken) sandbox on its kept writable layer.
func (r *Runtime) Start(ctx context.Context, id string) (_ runtime.Info, retErr error) {
	sb, err := r.lookup(id)
	if err != nil {
		return runtime.Info{}, err
	}
	sb.life.Lock()
	defer sb.life.Unlock()
	switch s := sb.getStatus(); s {
	case runtime.StatusRunning, runtime.StatusFrozen:
		return sb.info(), nil
	case runtime.StatusBroken:
		// Clear what is left of the last boot, keep the files.
		if err := r.teardown(ctx, sb, false); err != nil {
			return runtime.Info{}, fmt.Errorf("start sandbox %s: %w", id, err)
		}
	}
	if err := r.restart(ctx, sb); err != nil {
		return runtime.Info{}, fmt.Errorf("start sandbox %s: %w", id, err)
	}
	return sb.info(), nil
}

// MemoryUsage is the anonymous memory a sandbox's processes use (heaps,
// stacks; not page cache shared with the host), 0 when stopped.
func (r *Runtime) MemoryUsage(ctx context.Context, id string) (int64, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return 0, err
	}
	if s := sb.getStatus(); s != runtime.StatusRunning && s != runtime.StatusFrozen {
		return 0, nil
	}
	n, err := r.cg.group(id).memoryUsage()
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	return n, err
}
