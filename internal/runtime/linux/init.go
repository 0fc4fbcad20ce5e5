package linux

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/runtime"
)

// This file runs inside the sandbox, as its PID 1: the host starts the
// sandpool binary with new user, mount, PID, network, IPC and UTS
// namespaces and the argument "init". It sets up the root filesystem,
// then becomes the agent.

// initEnv marks the process as a sandbox init (with os.Args[1] == "init").
const initEnv = "SANDPOOL_INIT=1"

// Descriptors of init. The host starts it with the first two (ExtraFiles
// start at 3); the others arrive with its configuration, as one message on
// the control socket, and are moved to these numbers.
const (
	fdControl = 3 // a SOCK_SEQPACKET socket: the configuration comes, "ok" or an error goes back
	fdExe     = 4 // the sandpool binary (exec'd through /proc/self/fd)
	fdRoot    = 5 // the root filesystem: a detached overlay mount
	fdListen  = 6 // the agent's listening Unix socket
)

type initConfig struct {
	Hostname string      `json:"hostname"`
	Binds    []bindMount `json:"binds"`
	// Defaults are the template's user, env and working directory for
	// what the agent runs.
	Defaults runtime.Defaults `json:"defaults,omitzero"`
	// Devices are host device nodes bound into /dev; Driver the driver's
	// files bound under runtime.DriverDir; Sysfs asks for a read-only
	// /sys (see devices.go).
	Devices []devNode            `json:"devices,omitempty"`
	Driver  []runtime.DeviceFile `json:"driver,omitempty"`
	Sysfs   bool                 `json:"sysfs,omitempty"`
}

// IsInit reports whether this process was started as a sandbox's init.
// main (and TestMain of packages that make sandboxes) calls Init if so.
func IsInit() bool {
	return len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("SANDPOOL_INIT") == "1"
}

// Init sets up the sandbox and serves the host. It does not return.
func Init() {
	// PID 1 gets only the signals it handles, and Go would exit on these.
	// Handled, not ignored: an ignored signal stays ignored in every
	// process the agent starts, a handled one is reset to its default.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTSTP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGALRM)
	go func() {
		for range sigs {
		}
	}()
	os.Clearenv()
	// Hold fdRoot and fdListen (on /dev/null) until the descriptors
	// arrive: nothing opened meanwhile (the Go runtime's poller, the
	// agent) may take those numbers, which the arrivals replace.
	if err := reserveDescriptors(fdRoot, fdListen); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox init: %v\n", err)
		os.Exit(1)
	}
	// A thread counts against the sandbox's process limit: when sandboxed
	// code has taken every pid (a fork bomb), the Go runtime could not
	// start one it needs and PID 1 would die. Start enough now (the host
	// adds them to the limit); the runtime keeps idle threads for reuse.
	prestartThreads(16)
	// The agent first: its hardened spawner thread owes nothing to the
	// sandbox, so a spare has it ready before it is needed. Its log goes
	// to stderr, which becomes the sandbox's init.log on adoption.
	srv, agentErr := agent.NewServer(agent.Options{
		HardenSpawner: hardenThread,
		Log:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	// What every sandbox's root gets the same, /proc and /dev, is built
	// now too: adoption only moves them in.
	stageErr := stageMounts()
	// Started: every thread it keeps exists (the host counts them into
	// the sandbox's process limit), so it may be adopted. What failed is
	// said at adoption.
	ctl := os.NewFile(fdControl, "control")
	if _, err := ctl.Write([]byte(spareReady)); err != nil {
		os.Exit(0) // the host is gone
	}
	// Wait for a sandbox (a spare may wait long); a closed socket means
	// the host is gone or did not need this one.
	cfg, err := receiveSandbox(ctl)
	if errors.Is(err, io.EOF) {
		os.Exit(0) // not needed after all
	}
	if err == nil {
		err = cmp.Or(agentErr, stageErr)
	}
	if err == nil {
		srv.SetDefaults(agent.Defaults{User: cfg.Defaults.User, Env: cfg.Defaults.Env, Cwd: cfg.Defaults.Cwd})
		names := make([]string, len(cfg.Devices))
		for i, d := range cfg.Devices {
			names[i] = d.Name
		}
		srv.SetDevices(names)
		var l net.Listener
		if l, err = setupSandbox(cfg); err == nil {
			if _, err = ctl.Write([]byte("ok")); err == nil {
				ctl.Close()
				err = srv.Serve(l)
			}
		}
	}
	_, _ = fmt.Fprintf(ctl, "error: %v", err) // the host may be gone
	fmt.Fprintf(os.Stderr, "sandbox init: %v\n", err)
	os.Exit(1)
}

// prestartThreads makes the Go runtime start n OS threads (each goroutine
// holds one, locked, until all have started) and then lets them go idle.
func prestartThreads(n int) {
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	for range n {
		go func() {
			goruntime.LockOSThread()
			started.Done()
			release.Wait()
			goruntime.UnlockOSThread()
		}()
	}
	started.Wait()
	release.Done()
}

// reserveDescriptors opens /dev/null on each of fds.
func reserveDescriptors(fds ...int) error {
	null, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reserve descriptors: %w", err)
	}
	held := false // null is itself one of fds: keep it open
	for _, fd := range fds {
		if fd == null {
			held = true
			continue
		}
		if err := unix.Dup3(null, fd, unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("reserve descriptor %d: %w", fd, err)
		}
	}
	if !held {
		unix.Close(null)
	}
	return nil
}

// receiveSandbox reads the one message that makes this process a sandbox's
// PID 1: the configuration, with the root filesystem, the agent's socket
// and the log as descriptors, which it moves to fdRoot, fdListen, 1 and 2.
func receiveSandbox(ctl *os.File) (initConfig, error) {
	var cfg initConfig
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(int(ctl.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return cfg, err
	}
	if n == 0 {
		return cfg, io.EOF
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return cfg, fmt.Errorf("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 3 {
		return cfg, fmt.Errorf("descriptors: %d, %v", len(fds), err)
	}
	// Into place. The numbers received may be any, the targets among
	// them: move them all out of the way first.
	for i, fd := range fds {
		high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 100)
		if err != nil {
			return cfg, fmt.Errorf("move descriptor: %w", err)
		}
		unix.Close(fd)
		fds[i] = high
	}
	for i, to := range [][]int{{fdRoot}, {fdListen}, {1, 2}} {
		for _, t := range to {
			if err := unix.Dup3(fds[i], t, 0); err != nil {
				return cfg, fmt.Errorf("move descriptor: %w", err)
			}
		}
		unix.Close(fds[i])
	}
	if err := json.Unmarshal(buf[:n], &cfg); err != nil {
		return cfg, fmt.Errorf("decode config: %w", err)
	}
	return cfg, nil
}

func setupSandbox(cfg initConfig) (net.Listener, error) {
	// The agent's own /proc entries must not be readable or traceable by
	// sandboxed code, even code running as the sandbox's root.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("set non-dumpable: %w", err)
	}
	if err := mountRoot(cfg); err != nil {
		return nil, err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return nil, fmt.Errorf("set hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return nil, err
	}
	// Nothing from the host may stay open: the directories passed in
	// would let a process walk out of its root.
	unix.Close(fdExe)
	unix.Close(fdRoot)
	// Every other inherited descriptor closes at exec (the listener is
	// dup'ed with close-on-exec by FileListener below; the control socket
	// is closed once "ok" is sent).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, fmt.Errorf("close_range: %w", err)
	}
	lf := os.NewFile(fdListen, "listen")
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	return l, nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// stage is where init builds, before it has a sandbox, what every
// sandbox's root gets the same: a tmpfs over /tmp in init's own mount
// namespace (the host's /tmp is untouched), holding the sandbox's /proc
// and /dev ready-made and an empty directory the root is attached on.
const stage = "/tmp"

// stageMounts makes init's mounts private and builds stage. A spare does
// this ahead, so that adopting it costs two moves instead of some thirty
// mounts.
func stageMounts() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// The host's /tmp, which stage covers from here on: device sources
	// under it (as in tests) are reached through this handle.
	fd, err := unix.Open(stage, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", stage, err)
	}
	hostTmp = fd
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=700,size=16k"); err != nil {
		return fmt.Errorf("mount staging tmpfs: %w", err)
	}
	for _, d := range []string{"root", "proc", "dev"} {
		if err := os.Mkdir(stage+"/"+d, 0o755); err != nil {
			return err
		}
	}
	if err := mountProc(stage + "/proc"); err != nil {
		return err
	}
	return mountDev(stage + "/dev")
}

// hostTmp is an O_PATH descriptor of the host's /tmp as it was before
// stage covered it (-1 until then); mountRoot closes it, so nothing of the
// host stays open once the sandbox runs.
var hostTmp = -1

// mountRoot builds the sandbox's root and pivots into it. The host made
// the overlay (this process is root only inside its user namespace and
// cannot reach the data directory); it arrives as a detached mount and is
// attached in stage, gets the template's binds, the driver's files, the
// staged /proc and /dev (moved with the mounts under them) and its
// devices, then becomes /. The old root, stage with it, is detached.
func mountRoot(cfg initConfig) error {
	const root = stage + "/root"
	src, err := openDeviceSources(cfg)
	if hostTmp >= 0 {
		unix.Close(hostTmp)
		hostTmp = -1
	}
	if err != nil {
		return err
	}
	defer src.close()
	if err := unix.MoveMount(fdRoot, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach root filesystem: %w", err)
	}
	for _, b := range cfg.Binds {
		if err := bindReadOnly(b.Src, root+b.Dst); err != nil {
			return err
		}
	}
	if len(cfg.Driver) > 0 {
		if err := mountDriver(root+runtime.DriverDir, cfg.Driver, src.driver); err != nil {
			return err
		}
	}
	if cfg.Sysfs {
		// A host whose own /sys hides something under a mount refuses a
		// new sysfs to a user namespace: the sandbox then goes without
		// (CUDA itself does not need it), and its init.log says so.
		if err := mountSys(root + "/sys"); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox init: no /sys: %v\n", err)
		}
	}
	for _, d := range []string{"/proc", "/dev"} {
		if err := unix.Mount(stage+d, root+d, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", d, err)
		}
	}
	if err := bindDevices(root+"/dev", cfg.Devices, src.nodes); err != nil {
		return err
	}
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir to root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

func bindReadOnly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, dst, unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", dst, err)
	}
	return nil
}

// mountProc mounts a /proc for the sandbox's PID namespace and hides the
// few files that tell about the host or poke the kernel.
func mountProc(p string) error {
	if err := unix.Mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, f := range []string{"kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "latency_stats"} {
		if _, err := os.Stat(p + "/" + f); err != nil {
			continue
		}
		if err := unix.Mount("/dev/null", p+"/"+f, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", f, err)
		}
	}
	for _, d := range []string{"sys", "irq", "bus", "fs"} {
		if _, err := os.Stat(p + "/" + d); err != nil {
			continue
		}
		if err := bindReadOnly(p+"/"+d, p+"/"+d); err != nil {
			return err
		}
	}
	return nil
}

// mountDev builds a minimal /dev: a tmpfs with the harmless host devices
// bound in, a private devpts, a /dev/shm and a /dev/mqueue (the sandbox's
// own devices come at adoption: bindDevices).
func mountDev(p string) error {
	if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		f, err := os.OpenFile(filepath.Join(p, d), os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount("/dev/"+d, filepath.Join(p, d), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	links := [][2]string{{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(p, l[1])); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(p, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", p+"/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := unix.Mount("shm", p+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=256m"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	// POSIX message queues live in the IPC namespace; mounted, they can be
	// seen and removed when a session ends.
	if err := unix.Mount("mqueue", p+"/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /dev/mqueue: %w", err)
	}
	return nil
}

// loopbackUp brings up lo, the sandbox's only network interface.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}
