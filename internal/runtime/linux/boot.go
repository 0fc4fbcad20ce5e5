package linux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/runtime"
)

// boot starts a sandbox's PID 1 on its (existing) directory and waits for
// the agent. The caller holds sb.life and cleans up on error.
func (r *Runtime) boot(ctx context.Context, sb *sandbox) (retErr error) {
	st := sb.st
	dir := r.sandboxDir(st.ID)
	layers, binds, err := r.templateLayers(st.Template)
	if err != nil {
		return err
	}
	// Layers sealed into this sandbox lie over the template's, newest on top.
	own := make([]string, len(st.Layers))
	for i, l := range st.Layers {
		own[i] = filepath.Join(dir, l)
	}
	layers = append(own, layers...)
	step := time.Now()
	observe := func(name string) {
		now := time.Now()
		r.cfg.Observe(name, now.Sub(step))
		step = now
	}
	cg := r.cg.group(st.ID)
	if err := cg.create(st.Limits); err != nil {
		return err
	}
	observe("cgroup")

	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	open := func(p string, flags int) (*os.File, error) {
		f, err := os.OpenFile(p, flags|unix.O_CLOEXEC, 0)
		if err == nil {
			closers = append(closers, f)
		}
		return f, err
	}

	sock := filepath.Join(dir, "agent.sock")
	_ = os.Remove(sock) // left by an earlier boot of this sandbox, if any
	lfile, err := listenUnix(dir)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	closers = append(closers, lfile)

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	closers = append(closers, cfgR, cfgW)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	closers = append(closers, statusR, statusW)
	exe, err := open(r.initExe, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("open sandpool binary: %w", err)
	}
	rootMnt, err := mountOverlay(layers, dir)
	if err != nil {
		return err
	}
	closers = append(closers, rootMnt)
	observe("overlay")
	extra := []*os.File{cfgR, statusW, lfile, exe, rootMnt}
	logf, err := open(filepath.Join(dir, "init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND)
	if err != nil {
		return err
	}

	base := int(r.cfg.UIDBase)
	cmd := &exec.Cmd{
		Path: fdPath(fdExe),
		Args: []string{"sandpool", "init"},
		// Nothing of the host's environment; the id lets an operator (and
		// the leak tests) tell which sandbox a host process belongs to.
		Env:        []string{initEnv, "SANDPOOL_SANDBOX=" + st.ID},
		Stdout:     logf,
		Stderr:     logf,
		ExtraFiles: extra,
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
		return fmt.Errorf("start sandbox init: %w", err)
	}
	observe("start")
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // reap; how it ended is in init.log
		close(exited)
	}()
	start, err := pidStartTime(pid)
	if err != nil {
		_ = cmd.Process.Kill() // not yet in its cgroup: kill it directly
		<-exited
		return fmt.Errorf("sandbox init: %w", err)
	}
	sb.mu.Lock()
	sb.st.Pid, sb.st.PidStart, sb.st.Stopped = pid, start, false
	sb.exited = exited
	if sb.agent != nil { // connections kept to the last PID 1's agent
		sb.agent.CloseIdle()
		sb.agent = nil
	}
	st = sb.st
	sb.mu.Unlock()
	// Record the pid before anything else can fail, so teardown (now or
	// after a crash) knows what to kill.
	if err := r.saveState(st); err != nil {
		return err
	}
	if err := cg.add(pid); err != nil {
		return err
	}
	// While PID 1 starts up, before it runs anything of the sandbox's.
	if err := r.attachNetwork(ctx, sb, pid); err != nil {
		return err
	}
	cfg := initConfig{Hostname: st.Hostname, Binds: binds}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		return fmt.Errorf("configure sandbox init: %w", err)
	}
	cfgW.Close()
	statusW.Close() // ours; init holds the other copy
	observe("configure")

	deadline := time.Now().Add(r.cfg.ReadyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = statusR.SetReadDeadline(deadline) // pipes from os.Pipe are pollable
	stop := context.AfterFunc(ctx, func() { _ = statusR.SetReadDeadline(time.Now()) })
	defer stop()
	msg, err := io.ReadAll(statusR)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("sandbox did not become ready in time (ready timeout %s)", r.cfg.ReadyTimeout)
	case err != nil:
		return fmt.Errorf("sandbox init: %w", err)
	case string(msg) != "ok":
		if len(msg) == 0 {
			msg = []byte("exited during setup; see " + filepath.Join(dir, "init.log"))
		}
		return fmt.Errorf("sandbox init: %s", strings.TrimPrefix(string(msg), "error: "))
	}
	observe("ready")
	sb.setStatus(runtime.StatusRunning)
	return nil
}

// mountOverlay makes the sandbox's root filesystem, the template's layers
// under the sandbox's writable layer, as a detached mount that only its
// descriptor holds: nothing appears in the host's mount table, and the
// mount is gone once the sandbox's mount namespace is.
func mountOverlay(layers []string, dir string) (*os.File, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("overlayfs: %w (is the overlay module loaded?)", err)
	}
	defer unix.Close(fsfd)
	for _, kv := range [][2]string{
		{"lowerdir", strings.Join(layers, ":")},
		{"upperdir", filepath.Join(dir, "upper")},
		{"workdir", filepath.Join(dir, "work")},
	} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
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
