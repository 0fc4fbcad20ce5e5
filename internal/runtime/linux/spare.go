package linux

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/internal/ids"
	"golang.org/x/sys/unix"
)

// A sandbox's PID 1 is the sandpool binary, started in new user, mount,
// PID, network, IPC and UTS namespaces. Starting it — the clone into new
// namespaces, the exec of a large static binary, the Go runtime's start and
// the init of every package linked into it — is most of what a create
// costs. So the runtime keeps a few PID 1s started ahead ("spares"): each
// waits, having done nothing else, on a socket. A create takes one, moves
// it into the sandbox's cgroups, and hands it the sandbox's root
// filesystem, agent socket, log and configuration over that socket; it
// answers "ok" once the agent serves.
//
// A spare owns nothing: it runs in no sandbox's cgroup, with no mount of
// the sandbox's, and it exits when its socket closes (Close, or a crash of
// this process), so nothing of it outlives the server.

// spare is a PID 1 started ahead, waiting for its sandbox.
type spare struct {
	pid    int
	start  uint64        // its start time, against pid reuse
	ctl    *net.UnixConn // our end of its control socket
	exited chan struct{} // closed once it has exited and been reaped
	// group, on cgroup v1, is a cgroup of the spare's own that becomes
	// the sandbox's by a rename: moving a process into a cgroup waits for
	// an RCU grace period when none has been moved for a while (several
	// milliseconds), so that is done here, ahead, not during a create.
	group *cgroup
}

// alive reports whether the spare has not exited.
func (sp *spare) alive() bool {
	select {
	case <-sp.exited:
		return false
	default:
		return true
	}
}

// discard kills a spare nobody will use, waits for it and removes its
// cgroup.
func (sp *spare) discard() {
	sp.ctl.Close()                    // it exits on EOF, if it is waiting already
	_ = killProcess(sp.pid, sp.start) // best effort: closing its socket ends it anyway
	<-sp.exited
	if sp.group != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = sp.group.remove(ctx) // best effort: a later Open sweeps spare groups
		cancel()
	}
}

// spawnSpare starts a PID 1 that waits for its sandbox.
//
// ahead says it is made for later (by the filler), not for a create
// waiting on it: only then does it get the low CPU weight. The wait for
// it to start ends early when ctx ends (the filler stopped by Close: a
// spare of low weight on a busy host may take long to start).
func (r *Runtime) spawnSpare(ctx context.Context, ahead bool) (_ *spare, retErr error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "ctl")
	theirs := os.NewFile(uintptr(fds[1]), "ctl")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close() // FileConn holds a dup
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctl := conn.(*net.UnixConn)
	defer func() {
		if retErr != nil {
			ctl.Close()
		}
	}()
	exe, err := os.OpenFile(r.initExe, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open sandpool binary: %w", err)
	}
	defer exe.Close()
	base := int(r.cfg.UIDBase)
	cmd := &exec.Cmd{
		// The binary through its descriptor in the child: its path need
		// not be reachable, or even exist any more.
		Path: fdPath(fdExe),
		Args: []string{"sandpool", "init"},
		// Nothing of the host's environment; the tag tells an operator
		// (and the leak tests) what a host process it finds is, and of
		// which data directory.
		Env:        []string{initEnv, "SANDPOOL_SANDBOX=" + SpareTag(r.cfg.DataDir)},
		ExtraFiles: []*os.File{theirs, exe}, // fdControl, fdExe
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
				syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
			GidMappingsEnableSetgroups: true,
			// Become the namespace's root before exec, or exec drops every
			// capability (host root is not mapped inside).
			Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
			// Its own session: the sandbox outlives this process and
			// takes no signal from its terminal.
			Setsid: true,
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sandbox init: %w", err)
	}
	sp := &spare{pid: cmd.Process.Pid, ctl: ctl, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reap; how it ended is in the sandbox's init.log
		close(sp.exited)
	}()
	if sp.start, err = pidStartTime(sp.pid); err != nil {
		_ = cmd.Process.Kill() // in no cgroup of ours: kill it directly
		<-sp.exited
		return nil, fmt.Errorf("sandbox init: %w", err)
	}
	if r.cg.version == 1 {
		g := r.cg.group(r.spareGroupPrefix() + ids.Suffix())
		if err := g.make(); err != nil {
			sp.discard()
			return nil, err
		}
		sp.group = g
		// A spare made ahead, for later, takes only CPU that the sandboxes
		// and the server leave (its Go runtime's start and setup are some
		// milliseconds of CPU); one a create waits on does not wait
		// longer. Adoption gives its group the default weight back.
		if ahead {
			if err := writeFile(filepath.Join(g.dir("cpu"), "cpu.shares"), strconv.Itoa(spareShares)); err != nil {
				sp.discard()
				return nil, err
			}
		}
		if err := g.add(sp.pid); err != nil {
			sp.discard()
			return nil, err
		}
	}
	// Adopted only once started whole: its threads are counted into the
	// sandbox's process limit, and one it starts after would not fit.
	_ = ctl.SetReadDeadline(time.Now().Add(r.cfg.ReadyTimeout))
	stop := context.AfterFunc(ctx, func() { _ = ctl.SetReadDeadline(time.Unix(1, 0)) })
	buf := make([]byte, 64)
	n, err := ctl.Read(buf)
	stop()
	_ = ctl.SetReadDeadline(time.Time{})
	if err != nil || string(buf[:n]) != spareReady {
		sp.discard()
		return nil, fmt.Errorf("sandbox init did not start: %q, %v", buf[:n], err)
	}
	return sp, nil
}

// spareReady is what a PID 1 says on its control socket once it has
// started: before its sandbox's configuration, which it then waits for.
const spareReady = "ready"

// SpareTag names the spares of the runtime on dataDir: "spare-" and a
// hash of the data directory, which one process at a time owns, so
// runtimes of other data directories under the same cgroup parent keep
// theirs. Spares carry it in their environment and their cgroups'
// names.
func SpareTag(dataDir string) string {
	sum := sha256.Sum256([]byte(dataDir))
	return "spare-" + hex.EncodeToString(sum[:4])
}

// spareShares and defaultShares are cgroup v1 cpu.shares of a spare's
// group and of a sandbox's (the kernel's default).
const (
	spareShares   = 2
	defaultShares = 1024
)

func (r *Runtime) spareGroupPrefix() string { return SpareTag(r.cfg.DataDir) + "-" }

// sweepSpareGroups removes the cgroups of spares an earlier process on
// this data directory left (a crash): their spares exited when their
// control sockets closed, or are killed now. Every controller is looked
// at, not one: a crash in the middle of an adoption's rename leaves a
// spare's name in the controllers not yet renamed (the half-adopted
// sandbox is failed by the reconciler; its PID 1 is killed here).
func (r *Runtime) sweepSpareGroups() {
	if r.cg.version != 1 {
		return
	}
	prefix := r.spareGroupPrefix()
	names := map[string]bool{}
	for _, c := range r.cg.v1 {
		ents, _ := os.ReadDir(r.cg.parents[c]) // none: nothing to sweep
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
				names[e.Name()] = true
			}
		}
	}
	for name := range names {
		g := r.cg.group(name)
		for _, c := range r.cg.v1 {
			b, _ := os.ReadFile(filepath.Join(g.dir(c), "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = unix.Kill(pid, unix.SIGKILL) // a spare left behind: it has no sandbox
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.remove(ctx); err != nil {
			r.cfg.Log.Warn("remove a spare's cgroup left by an earlier process", "cgroup", name, "err", err)
		}
		cancel()
	}
}

// spares keeps up to n spare PID 1s ready: never more than n exist,
// ready or being made.
type spares struct {
	r    *Runtime
	ch   chan *spare   // ready
	room chan struct{} // a token for each spare that may be made
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// startSpares starts the filler; n == 0 starts none (every create then
// starts its PID 1 itself).
func (r *Runtime) startSpares(n int) *spares {
	r.sweepSpareGroups()
	s := &spares{r: r, ch: make(chan *spare, max(n, 0)), room: make(chan struct{}, max(n, 0))}
	for range max(n, 0) {
		s.room <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if n <= 0 {
		return s
	}
	s.wg.Go(func() {
		backoff := 10 * time.Millisecond
		for {
			select {
			case <-s.room:
			case <-ctx.Done():
				return
			}
			sp, err := r.spawnSpare(ctx, true)
			if err != nil {
				s.room <- struct{}{} // its token back: try again
				if ctx.Err() != nil {
					return
				}
				r.cfg.Log.Warn("start a spare sandbox init", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			backoff = 10 * time.Millisecond
			select {
			case s.ch <- sp:
			case <-ctx.Done():
				sp.discard()
				return
			}
		}
	})
	return s
}

// take returns a waiting spare, or starts a PID 1 now when none is ready.
func (s *spares) take() (*spare, error) {
	for {
		select {
		case sp := <-s.ch:
			s.room <- struct{}{} // the filler may make another
			if sp.alive() {
				return sp, nil
			}
			sp.discard() // it died waiting (killed by someone): take the next
		default:
			return s.r.spawnSpare(context.Background(), false)
		}
	}
}

// close stops the filler and ends the spares waiting.
func (s *spares) close() {
	s.stop()
	s.wg.Wait()
	for {
		select {
		case sp := <-s.ch:
			sp.discard()
		default:
			return
		}
	}
}

// adopt hands a spare its sandbox: the root filesystem, the agent's
// listening socket and the log as descriptors, and the configuration, in
// one message; then waits for its answer ("ok" once the agent serves, or
// the error that stopped it) until deadline.
func (sp *spare) adopt(cfg []byte, root, listen, log *os.File, deadline time.Time) error {
	rights := unix.UnixRights(int(root.Fd()), int(listen.Fd()), int(log.Fd()))
	if _, _, err := sp.ctl.WriteMsgUnix(cfg, rights, nil); err != nil {
		return fmt.Errorf("configure sandbox init: %w", err)
	}
	_ = sp.ctl.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	n, _, _, _, err := sp.ctl.ReadMsgUnix(buf, nil)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || (err == nil && n == 0) {
		return errInitExited
	}
	if err != nil {
		return err
	}
	if msg := string(buf[:n]); msg != "ok" {
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// errInitExited: PID 1 exited before it said it was ready.
var errInitExited = errors.New("exited during setup")
