// Package localrun runs Dockerfile RUN steps on this host without the
// sandpool runtime. The command runs as the step's user in new user,
// mount, PID, IPC, UTS and network namespaces (ids mapped onto the
// sandbox range, as a sandbox's), with the step's layers under a fresh
// overlayfs upper dir as its root (pivot_root), a /proc and a small /dev
// of its own, and no network. What it writes lands in the upper dir,
// which becomes the step's layer.
//
// It needs root, and the binary must call Helper early in main (or in
// TestMain) when IsHelper says so: the command's PID 1 is this binary,
// re-executed, which sets up the root and then execs the command. The
// server runs RUN steps in real sandboxes instead; this is for tests and
// tools.
package localrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/dockerfile"
	"github.com/sandpool/sandpool/internal/image"
)

const helperEnv = "SANDPOOL_LOCALRUN_HELPER"

// Exit codes of the helper for what is not the command's own failure.
const (
	exitSetup    = 125 // the root could not be set up
	exitNotFound = 127 // the command does not exist (as a shell says)
)

// Runner runs RUN steps; the zero value is not usable.
type Runner struct {
	// Dir holds each run's upper, work and mount directories.
	Dir string
	// UIDBase is the host id of the sandbox's root, as the store's.
	UIDBase int
}

var _ dockerfile.Runner = (*Runner)(nil)

// IsHelper reports whether this process was started as a run's PID 1.
func IsHelper() bool { return os.Getenv(helperEnv) != "" }

type helperConfig struct {
	Workdir string   `json:"workdir"`
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
	Env     []string `json:"env"`
	Cmd     []string `json:"cmd"`
}

// Run runs step and returns its upper dir.
func (r *Runner) Run(ctx context.Context, step dockerfile.RunStep) (_ dockerfile.RunResult, retErr error) {
	if len(step.Cmd) == 0 {
		return dockerfile.RunResult{}, errors.New("no command")
	}
	run, err := os.MkdirTemp(r.Dir, "run-")
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	release := func() { _ = os.RemoveAll(run) } // best effort: a temp dir
	defer func() {
		if retErr != nil {
			release()
		}
	}()
	upper, work, empty := filepath.Join(run, "upper"), filepath.Join(run, "work"), filepath.Join(run, "empty")
	for _, d := range []string{upper, work, empty} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return dockerfile.RunResult{}, err
		}
	}
	// The root of the merged tree is the upper dir's: the sandbox's root
	// owns it, as the store's layers' roots.
	if err := os.Chown(upper, r.UIDBase, r.UIDBase); err != nil {
		return dockerfile.RunResult{}, err
	}
	lower := slices.Clone(step.Layers)
	slices.Reverse(lower)
	if len(lower) == 0 {
		lower = []string{empty} // FROM scratch
	}
	// The helper runs as the sandbox's root, which cannot reach the
	// layers: it gets the overlay as a detached mount, which only its
	// descriptor holds (and no mount table shows).
	root, err := mountOverlay(lower, upper, work)
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	defer root.Close()
	cfg, err := json.Marshal(helperConfig{Workdir: step.Workdir, UID: step.UID, GID: step.GID, Env: step.Env, Cmd: step.Cmd})
	if err != nil {
		return dockerfile.RunResult{}, err
	}
	out := step.Output
	if out == nil {
		out = io.Discard
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"localrun"}
	cmd.Env = []string{helperEnv + "=" + string(cfg)}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{root} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: r.UIDBase, Size: 1 << 16}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: r.UIDBase, Size: 1 << 16}},
		GidMappingsEnableSetgroups: true,
		// Root of the new namespace before exec, or exec drops every
		// capability (host root is not mapped inside).
		Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		Pdeathsig:  syscall.SIGKILL,
	}
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return dockerfile.RunResult{}, ctx.Err()
	case errors.As(err, &ee) && ee.ExitCode() == exitSetup:
		return dockerfile.RunResult{}, errors.New("the run's root could not be set up (see its output)")
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return dockerfile.RunResult{}, &dockerfile.ExitError{Code: ee.ExitCode()}
	default:
		return dockerfile.RunResult{}, err
	}
	return dockerfile.RunResult{UpperDir: upper, Release: release}, nil
}

// mountOverlay mounts the layers (top first) as a detached mount. Options
// that would write overlayfs metadata a lower layer cannot carry
// (redirects, metacopy, index) are off, so the upper dir is a plain layer.
func mountOverlay(lower []string, upper, work string) (*os.File, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("overlayfs: %w", err)
	}
	defer unix.Close(fsfd)
	for _, l := range lower {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", l); err != nil {
			return nil, fmt.Errorf("overlayfs lowerdir+=%s: %w", l, err)
		}
	}
	for _, kv := range [][2]string{
		{"upperdir", upper}, {"workdir", work},
		{"redirect_dir", "off"}, {"metacopy", "off"}, {"index", "off"},
	} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return nil, fmt.Errorf("overlayfs %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("overlayfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("overlayfs: %w", err)
	}
	return os.NewFile(uintptr(mfd), "rootfs"), nil
}

// Helper is the run's PID 1: it sets up the root and execs the command.
// It never returns.
func Helper() {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &cfg); err != nil {
		fail(exitSetup, "config: %v", err)
	}
	if err := setupRoot(3); err != nil {
		fail(exitSetup, "%v", err)
	}
	wd := cfg.Workdir
	if wd == "" {
		wd = "/"
	}
	// As Docker, a missing working directory is made (by root, before the
	// user is taken).
	if err := os.MkdirAll(wd, 0o755); err != nil {
		fail(exitSetup, "working directory %s: %v", wd, err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		fail(exitSetup, "setgroups: %v", err)
	}
	if err := syscall.Setgid(cfg.GID); err != nil {
		fail(exitSetup, "setgid %d: %v", cfg.GID, err)
	}
	if err := syscall.Setuid(cfg.UID); err != nil {
		fail(exitSetup, "setuid %d: %v", cfg.UID, err)
	}
	if err := os.Chdir(wd); err != nil {
		fail(exitSetup, "chdir %s: %v", wd, err)
	}
	path, _ := image.Getenv(cfg.Env, "PATH")
	os.Setenv("PATH", path)
	argv0 := cfg.Cmd[0]
	if !strings.Contains(argv0, "/") {
		p, err := exec.LookPath(argv0)
		if err != nil {
			fail(exitNotFound, "%s: command not found", argv0)
		}
		argv0 = p
	}
	err := syscall.Exec(argv0, cfg.Cmd, cfg.Env)
	fail(exitNotFound, "exec %s: %v", cfg.Cmd[0], err)
}

// setupRoot makes the detached mount rootFD the root of this mount
// namespace (attached over /tmp first, as the runtime's init does), with
// /proc and /dev of its own where the image has those directories.
func setupRoot(rootFD int) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.MoveMount(rootFD, "", unix.AT_FDCWD, "/tmp", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the root: %w", err)
	}
	unix.Close(rootFD)
	if err := unix.Chdir("/tmp"); err != nil {
		return fmt.Errorf("enter the root: %w", err)
	}
	if isDir("proc") {
		if err := unix.Mount("proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /proc: %w", err)
		}
	}
	if dev := "dev"; isDir(dev) {
		if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
			return fmt.Errorf("mount /dev: %w", err)
		}
		for _, n := range []string{"null", "zero", "full", "random", "urandom"} {
			p := filepath.Join(dev, n)
			if err := os.WriteFile(p, nil, 0o666); err != nil {
				return err
			}
			if err := unix.Mount("/dev/"+n, p, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind /dev/%s: %w", n, err)
			}
		}
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return os.Chdir("/")
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "localrun: "+format+"\n", args...)
	os.Exit(code)
}
