package linux

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// boot starts a sandbox's PID 1 on its (existing) directory and waits for
// the agent. The caller holds sb.life and cleans up on error.
func (r *Runtime) boot(ctx context.Context, sb *sandbox) (retErr error) {
	st := sb.st
	dir := r.sandboxDir(st.ID)
	var (
		tpl templateInfo
		err error
	)
	if len(st.Lower) > 0 { // made on layers: a build step
		tpl.lower = slices.Clone(st.Lower)
		slices.Reverse(tpl.lower)
	} else if tpl, err = r.template(st.Template); err != nil {
		return err
	}
	// Layers sealed into this sandbox lie over the template's, newest on top.
	layers := make([]string, 0, len(st.Layers)+len(tpl.lower))
	for _, l := range st.Layers {
		layers = append(layers, filepath.Join(dir, l))
	}
	layers = append(layers, tpl.lower...)
	cfg := initConfig{Hostname: st.Hostname, Binds: tpl.binds, Defaults: tpl.defaults}
	if l := r.bootDevices(st.Devices, tpl, &cfg); l != "" {
		layers = append([]string{l}, layers...) // mount points for the devices' mounts, on top
	}
	step := time.Now()
	observe := func(name string) {
		now := time.Now()
		r.cfg.Observe(name, now.Sub(step))
		step = now
	}

	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()

	sock := filepath.Join(dir, "agent.sock")
	_ = os.Remove(sock) // left by an earlier boot of this sandbox, if any
	lfile, err := listenUnix(dir)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	closers = append(closers, lfile)
	rootMnt, err := mountOverlay(layers, dir, len(st.Lower) > 0)
	if err != nil {
		return err
	}
	closers = append(closers, rootMnt)
	observe("overlay")
	logf, err := os.OpenFile(filepath.Join(dir, "init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	closers = append(closers, logf)

	// A PID 1 started ahead (see spare.go), or one started now.
	sp, err := r.spares.take()
	if err != nil {
		return err
	}
	observe("start")
	// The limit on processes is the sandbox's own: PID 1's threads (which
	// it starts ahead, so it never needs one when the limit is reached)
	// come on top.
	lim := st.Limits
	if lim.Pids > 0 {
		lim.Pids += int64(threadCount(sp.pid))
	}
	cg, move, err := r.sandboxGroup(sp, st.ID, lim)
	if err != nil {
		sp.discard()
		return err
	}
	observe("cgroup")
	sb.mu.Lock()
	sb.st.Pid, sb.st.PidStart, sb.st.Stopped = sp.pid, sp.start, false
	sb.exited = sp.exited
	if sb.agent != nil { // connections kept to the last PID 1's agent
		sb.agent.CloseIdle()
		sb.agent = nil
	}
	st = sb.st
	sb.mu.Unlock()
	defer sp.ctl.Close() // once it serves, nothing more is said on it
	// Record the pid before anything else can fail, so teardown (now or
	// after a crash) knows what to kill.
	if err := r.saveState(st); err != nil {
		return err
	}
	if move {
		if err := cg.add(sp.pid); err != nil {
			return err
		}
		if sp.group != nil && sp.group != cg {
			_ = sp.group.remove(ctx) // empty now; best effort: a later Open sweeps spare groups
		}
	}
	// Before PID 1 is told to build anything: its device cgroup.
	if len(st.Devices.Nodes) > 0 {
		if err := cg.limitDevices(sp.pid, deviceRules(st.Devices.Nodes)); err != nil {
			return err
		}
	}
	msg, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// The sandbox's network link is made while PID 1 builds its root
	// (they touch nothing of each other's): the sandbox runs nothing of
	// its own before boot returns, and boot returns only once the link is
	// in place (or its error). Any return waits for it, so teardown finds
	// the link if one was made.
	attached := make(chan error, 1)
	go func() { attached <- r.attachNetwork(ctx, sb, sp.pid) }()
	var attachErr error
	waitAttach := sync.OnceFunc(func() { attachErr = <-attached })
	defer waitAttach()
	observe("configure")

	deadline := time.Now().Add(r.cfg.ReadyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = sp.ctl.SetReadDeadline(time.Now()) })
	defer stop()
	err = sp.adopt(msg, rootMnt, lfile, logf, deadline)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("sandbox did not become ready in time (ready timeout %s)", r.cfg.ReadyTimeout)
	case errors.Is(err, errInitExited):
		return fmt.Errorf("sandbox init exited during setup: %s", logTail(filepath.Join(dir, "init.log")))
	case err != nil:
		return fmt.Errorf("sandbox init: %s", strings.TrimPrefix(err.Error(), "error: "))
	}
	if waitAttach(); attachErr != nil {
		return attachErr
	}
	observe("ready")
	sb.setStatus(runtime.StatusRunning)
	return nil
}

// threadCount is how many threads process pid has (0 if it cannot tell).
func threadCount(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return 0
	}
	return len(ents)
}

// logTail is the end of a log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "it said nothing (killed?)"
	}
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return strings.TrimSpace(string(b))
}

// sandboxGroup makes the sandbox's cgroup with its limits. On cgroup v1
// that is the spare's own group renamed, with the spare already in it
// (moved reports false); otherwise a new group the caller moves the spare
// into, once its pid is recorded. On error nothing of the sandbox's group
// is left, and the spare is the caller's.
func (r *Runtime) sandboxGroup(sp *spare, id string, lim runtime.Limits) (cg *cgroup, move bool, err error) {
	if sp.group != nil {
		err := writeFile(filepath.Join(sp.group.dir("cpu"), "cpu.shares"), strconv.Itoa(defaultShares))
		if err == nil {
			err = sp.group.limit(lim)
		}
		if err == nil {
			if err = sp.group.renameTo(id); err == nil {
				return sp.group, false, nil
			}
		}
		// A group of that name left over, say: a group of its own and a
		// move, then the spare's group (empty by then) goes.
		r.cfg.Log.Warn("a spare's cgroup could not become the sandbox's; moving it", "sandbox", id, "err", err)
	}
	cg = r.cg.group(id)
	if err := cg.create(lim); err != nil {
		return nil, false, err
	}
	return cg, true, nil
}

// mountOverlay makes the sandbox's root filesystem, the template's layers
// (top first) under the sandbox's writable layer, as a detached mount that
// only its descriptor holds: nothing appears in the host's mount table, and
// the mount is gone once the sandbox's mount namespace is. Each layer is
// its own lowerdir+ (Linux 6.8): a joined lowerdir string is cut at 256
// bytes. With plain, the writable layer gets no redirects, metacopy or
// index, so it can become an image layer (a renamed directory is copied).
func mountOverlay(layers []string, dir string, plain bool) (*os.File, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("overlayfs: %w (is the overlay module loaded?)", err)
	}
	defer unix.Close(fsfd)
	opts := make([][2]string, 0, len(layers)+5)
	for _, l := range layers {
		opts = append(opts, [2]string{"lowerdir+", l})
	}
	opts = append(opts, [2]string{"upperdir", filepath.Join(dir, "upper")}, [2]string{"workdir", filepath.Join(dir, "work")})
	if plain {
		opts = append(opts, [2]string{"redirect_dir", "off"}, [2]string{"metacopy", "off"}, [2]string{"index", "off"})
	}
	for _, kv := range opts {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			if errors.Is(err, unix.EINVAL) && kv[0] == "lowerdir+" {
				return nil, fmt.Errorf("overlayfs %s=%s: %w (lowerdir+ needs Linux 6.8 or later)", kv[0], kv[1], err)
			}
			return nil, fmt.Errorf("overlayfs %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("overlayfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return nil, fmt.Errorf("overlayfs: %w", err)
	}
	return os.NewFile(uintptr(mfd), "rootfs"), nil
}

// listenUnix makes the agent's socket in dir. The path is reached through a
// descriptor so the data directory may be deeper than a socket path allows.
func listenUnix(dir string) (*os.File, error) {
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	path := fdPath(int(d.Fd())) + "/agent.sock"
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "agent.sock"), nil
}

// teardown kills every process of the sandbox, removes its cgroup and, if
// removeDir, its directory. Each step tolerates what is already gone, so it
// also finishes a partial create or an earlier failed teardown. The
// caller holds sb.life.
func (r *Runtime) teardown(ctx context.Context, sb *sandbox, removeDir bool) error {
	sb.mu.Lock()
	st := sb.st
	exited := sb.exited
	sb.stopping = true
	sb.mu.Unlock()
	defer func() {
		sb.mu.Lock()
		sb.stopping = false
		sb.mu.Unlock()
	}()
	r.detachNetwork(sb)
	cg := r.cg.group(st.ID)
	if err := r.killAll(ctx, cg, st, exited); err != nil {
		return err
	}
	if err := cg.remove(ctx); err != nil {
		return err
	}
	sb.mu.Lock()
	sb.st.Pid, sb.st.PidStart, sb.st.Stopped = 0, 0, true
	sb.exited = nil
	sb.status = runtime.StatusStopped
	if sb.agent != nil { // its agent is gone
		sb.agent.CloseIdle()
		sb.agent = nil
	}
	st = sb.st
	sb.mu.Unlock()
	if removeDir {
		// Rename first: a crash mid-removal must not leave a directory
		// that looks like a sandbox.
		dir := r.sandboxDir(st.ID)
		gone := filepath.Join(r.cfg.DataDir, "sandboxes", ".destroyed-"+st.ID)
		if err := os.Rename(dir, gone); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return os.RemoveAll(gone)
	}
	if _, err := os.Stat(r.sandboxDir(st.ID)); err == nil {
		return r.saveState(st)
	}
	return nil
}

// killAll kills PID 1 (the kernel then kills the rest of its PID
// namespace) and anything else left in the cgroup, and waits until the
// cgroup is empty. A frozen group is thawed so the kill can land.
func (r *Runtime) killAll(ctx context.Context, cg *cgroup, st state, exited chan struct{}) error {
	if st.Pid > 0 {
		if err := killProcess(st.Pid, st.PidStart); err != nil {
			return err
		}
	}
	if !cg.exists() {
		if exited != nil {
			<-exited
		}
		return nil
	}
	_ = cg.thaw() // absent freezer or not frozen: nothing to do
	for delay := 100 * time.Microsecond; ; delay = min(delay*2, 20*time.Millisecond) {
		pids, err := cg.procs()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = unix.Kill(p, unix.SIGKILL) // it may be exiting already
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return fmt.Errorf("waiting for sandbox processes to exit: %w", err)
		}
	}
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// killProcess sends SIGKILL to pid if it is still the process that started
// at start (pid reuse must not make us kill a stranger).
func killProcess(pid int, start uint64) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if got, err := pidStartTime(pid); err != nil || got != start {
		return nil // gone, or someone else now
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}

// processAlive reports whether pid is running and is the process that
// started at start.
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := pidStartTime(pid)
	if err != nil || got != start {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// pidStartTime reads field 22 of /proc/pid/stat.
func pidStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
