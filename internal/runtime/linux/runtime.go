// Package linux is the default sandbox backend: Linux namespaces, cgroups
// (v1 or v2), overlayfs and seccomp, driven by a root process with no
// container engine. Each sandbox's PID 1 is the sandpool binary itself,
// started as `sandpool init`, which becomes the agent (package agent).
package linux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/pattern"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/agent"
	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime"
)

// Config configures a Runtime.
type Config struct {
	// DataDir holds templates and sandboxes. Required.
	DataDir string
	// InitPath is the sandpool binary run as each sandbox's PID 1; empty
	// means this executable (which must call linux.Init when IsInit).
	InitPath string
	// UIDBase is the first host uid (and gid) of the 65536 that sandbox
	// ids 0..65535 map onto. Default 100000.
	UIDBase uint32
	// CgroupRoot is where cgroups are mounted. Default /sys/fs/cgroup.
	CgroupRoot string
	// CgroupParent names the group under which each sandbox gets its own.
	// Default "sandpool".
	CgroupParent string
	// Defaults apply to limits a Spec leaves at zero.
	Defaults runtime.Limits
	// ReadyTimeout bounds how long a sandbox may take to boot. Default 30s.
	ReadyTimeout time.Duration
	// Spares is how many sandbox PID 1s are kept started ahead, each
	// waiting for its sandbox (see spare.go): 0 means the default (2), a
	// negative number none (every create starts its own).
	Spares int
	// Observe, if set, is told how long each step of a create took (see
	// BootSteps): for metrics and for profiling the create path.
	Observe func(step string, d time.Duration)
	// Egress gives sandboxes their network path out; nil means none ever
	// has one (only network mode "none" is accepted).
	Egress *egress.Engine
	Log    *slog.Logger
}

// BootSteps are the steps of a create, in order, as Observe names them:
// the sandbox's directory and state file; its cgroups; its root
// filesystem (a detached overlay mount); starting PID 1 (clone into new
// namespaces and exec of the sandpool binary); recording and configuring
// it (state, cgroup membership, the configuration sent down its pipe);
// and PID 1 making the sandbox (the Go runtime's start, mounts, pivot,
// the agent) until it says it is ready.
var BootSteps = []string{"directory", "cgroup", "overlay", "start", "configure", "ready"}

// DefaultLimits are used when neither Spec nor Config says otherwise.
var DefaultLimits = runtime.Limits{CPUs: 1, MemoryBytes: 512 << 20, Pids: 512}

// Limit bounds, checked by Validate.
const (
	minMemory = 32 << 20
	maxMemory = 1 << 40
	minPids   = 16
	maxPids   = 1 << 22
	maxCPUs   = 1024
)

func (c *Config) setDefaults() {
	if c.UIDBase == 0 {
		c.UIDBase = 100000
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "sandpool"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Spares == 0 {
		c.Spares = 2
	}
	if c.Observe == nil {
		c.Observe = func(string, time.Duration) {}
	}
	c.Defaults = c.Defaults.WithDefaults(DefaultLimits)
}

// Validate names the first bad setting.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("linux runtime: DataDir is required")
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("linux runtime: DataDir %q must be absolute", c.DataDir)
	}
	if c.UIDBase != 0 && (c.UIDBase < 65536 || uint64(c.UIDBase)+65536 > 1<<32-1) {
		return fmt.Errorf("linux runtime: UIDBase %d must leave 65536 ids above 65535 and below 2^32-1", c.UIDBase)
	}
	if c.CgroupParent != "" && (strings.Contains(c.CgroupParent, "..") || filepath.IsAbs(c.CgroupParent)) {
		return fmt.Errorf("linux runtime: CgroupParent %q must be a relative name", c.CgroupParent)
	}
	return validateLimits(c.Defaults)
}

func validateLimits(l runtime.Limits) error {
	switch {
	case l.CPUs < 0 || l.CPUs > maxCPUs || (l.CPUs > 0 && l.CPUs < 0.01):
		return errdefs.Userf(errdefs.ErrInvalid, "cpus %g out of range: 0.01 to %d", l.CPUs, maxCPUs)
	case l.MemoryBytes < 0 || l.MemoryBytes > maxMemory || (l.MemoryBytes > 0 && l.MemoryBytes < minMemory):
		return errdefs.Userf(errdefs.ErrInvalid, "memory_bytes %d out of range: %d to %d", l.MemoryBytes, int64(minMemory), int64(maxMemory))
	case l.Pids < 0 || l.Pids > maxPids || (l.Pids > 0 && l.Pids < minPids):
		return errdefs.Userf(errdefs.ErrInvalid, "pids %d out of range: %d to %d", l.Pids, minPids, maxPids)
	case l.DiskBytes < 0:
		return errdefs.Userf(errdefs.ErrInvalid, "disk_bytes %d must not be negative", l.DiskBytes)
	case l.GPUs < 0:
		return errdefs.Userf(errdefs.ErrInvalid, "gpus %d must not be negative", l.GPUs)
	}
	return nil
}

// Runtime is the Linux backend. Use Open.
type Runtime struct {
	cfg     Config
	cg      *cgroupDriver
	initExe string
	lock    *os.File // flock on the data directory
	spares  *spares  // PID 1s started ahead

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	closed    bool

	tplMu   sync.Mutex
	tpls    map[string]templateInfo // what template() read of each
	closing sync.WaitGroup          // egress links being closed
}

var _ runtime.Runtime = (*Runtime)(nil)

// Open prepares the data directory, generates the base template if needed,
// and finds the sandboxes an earlier process left there. Only one Runtime
// may use a data directory at a time.
func Open(cfg Config) (_ *Runtime, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("linux runtime: must run as root (namespaces, cgroups and mounts need it)")
	}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "templates"), filepath.Join(cfg.DataDir, "sandboxes")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("linux runtime: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(cfg.DataDir, "runtime.lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	// A process that just exited may hold the lock a moment longer, in a
	// child it was starting (between fork and exec a child holds every
	// descriptor): wait a little before saying the directory is in use.
	for deadline := time.Now().Add(3 * time.Second); ; {
		err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			lock.Close()
			return nil, fmt.Errorf("linux runtime: data directory %s is in use by another sandpool process", cfg.DataDir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	exe := cfg.InitPath
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("linux runtime: find own executable: %w", err)
		}
	}
	cg, err := newCgroupDriver(cfg.CgroupRoot, cfg.CgroupParent)
	if err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	r := &Runtime{cfg: cfg, cg: cg, initExe: exe, lock: lock, sandboxes: map[string]*sandbox{}, tpls: map[string]templateInfo{}}
	if err := r.sweepTemplates(); err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	if err := r.ensureBase(); err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	if err := r.ensureDeviceLayer(); err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	if err := r.recover(); err != nil {
		return nil, fmt.Errorf("linux runtime: %w", err)
	}
	r.spares = r.startSpares(cfg.Spares)
	return r, nil
}

// Close ends the spare PID 1s and releases the data directory. Sandboxes
// keep running; a later Open finds them. It waits for the egress links of
// destroyed sandboxes to finish closing (those of running sandboxes are
// the engine's to close).
func (r *Runtime) Close() error {
	r.mu.Lock()
	was := r.closed
	r.closed = true
	r.mu.Unlock()
	if was {
		return nil
	}
	r.spares.close()
	r.closing.Wait()
	return r.lock.Close()
}

// DataDir is the directory the runtime keeps templates and sandboxes in.
func (r *Runtime) DataDir() string { return r.cfg.DataDir }

// UIDBase is the host uid (and gid) that is root in a sandbox: layers made
// for this runtime are owned from there.
func (r *Runtime) UIDBase() int { return int(r.cfg.UIDBase) }

// Capabilities reports what this backend does.
func (r *Runtime) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Name: "linux", FreezeKeepsMemory: true, CgroupVersion: r.cg.version, Defaults: r.cfg.Defaults,
		Egress: r.cfg.Egress != nil}
}

// sandbox is the runtime's record of one sandbox.
type sandbox struct {
	// life serialises lifecycle changes (create, start, stop, destroy,
	// freeze, thaw); it is never held across a process's I/O.
	life sync.Mutex

	mu     sync.Mutex // guards the fields below
	st     state
	status runtime.Status
	gone   bool // destroyed
	// stopping: a teardown is under way; agent failures are then expected
	// and not a sign of a broken sandbox.
	stopping bool
	cancel   context.CancelFunc
	exited   chan struct{} // closed when PID 1 exits, if this process started it
	agent    *agent.Client // made on first use; dropped when PID 1 changes
	cpu      cpuSample     // the last CPU measurement (Metrics)
	// link is the sandbox's egress link (network.go), nil with none;
	// detached says a running sandbox should have one but its making
	// failed; netBase counts what its earlier links relayed.
	link     *egress.Link
	detached bool
	netBase  runtime.NetworkStats
}

func (sb *sandbox) getStatus() runtime.Status {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.status
}

func (sb *sandbox) setStatus(s runtime.Status) {
	sb.mu.Lock()
	sb.status = s
	sb.mu.Unlock()
}

func (sb *sandbox) info() runtime.Info {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	// A PID 1 that died by itself (killed from outside, the OOM killer)
	// leaves a broken sandbox; report it as such.
	if (sb.status == runtime.StatusRunning || sb.status == runtime.StatusFrozen) && !sb.stopping &&
		sb.st.Pid > 0 && !processAlive(sb.st.Pid, sb.st.PidStart) {
		sb.status = runtime.StatusBroken
	}
	return runtime.Info{ID: sb.st.ID, Template: sb.st.Template, Status: sb.status, Limits: sb.st.Limits,
		CreatedAt: sb.st.CreatedAt, Pid: sb.st.Pid, Network: sb.st.Network,
		NetworkDetached: sb.detached && (sb.status == runtime.StatusRunning || sb.status == runtime.StatusFrozen)}
}

// state is what a sandbox's directory records about it (state.json), so a
// later process can find and control it.
type state struct {
	ID        string         `json:"id"`
	Template  string         `json:"template"`
	Hostname  string         `json:"hostname"`
	Limits    runtime.Limits `json:"limits"`
	CreatedAt time.Time      `json:"created_at"`
	// Pid and PidStart (start time in clock ticks since boot) identify
	// PID 1 without being fooled by pid reuse. Zero when stopped.
	Pid      int    `json:"pid,omitempty"`
	PidStart uint64 `json:"pid_start,omitempty"`
	Stopped  bool   `json:"stopped,omitempty"`
	// Layers are this sandbox's sealed layers (directory names in its
	// directory), newest first; they lie over the template's.
	Layers []string `json:"layers,omitempty"`
	// Lower, for a sandbox made on layers (Spec.Layers), are those
	// directories, lowest first, in place of a template's.
	Lower []string `json:"lower,omitempty"`
	// Network is its egress policy, made again at every boot and by a
	// later process that finds it running.
	Network runtime.Network `json:"network,omitzero"`
	// Devices are the host devices it is given (Spec.Devices; SetDevices).
	Devices runtime.Devices `json:"devices,omitzero"`
}

func (r *Runtime) sandboxDir(id string) string {
	return filepath.Join(r.cfg.DataDir, "sandboxes", id)
}

func (r *Runtime) saveState(st state) error {
	return writeJSON(filepath.Join(r.sandboxDir(st.ID), "state.json"), st)
}

var idPattern = pattern.New(`^[a-z0-9][a-z0-9_-]*$`, 1, 64)

// lookup finds a sandbox that is not destroyed.
func (r *Runtime) lookup(id string) (*sandbox, error) {
	r.mu.Lock()
	sb := r.sandboxes[id]
	r.mu.Unlock()
	if sb == nil {
		return nil, errdefs.Userf(errdefs.ErrNotFound, "no sandbox %q", id)
	}
	return sb, nil
}

// Get reports one sandbox.
func (r *Runtime) Get(ctx context.Context, id string) (runtime.Info, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return runtime.Info{}, err
	}
	return sb.info(), nil
}

// List reports every sandbox, sorted by id (and so by creation time).
func (r *Runtime) List(ctx context.Context) ([]runtime.Info, error) {
	r.mu.Lock()
	out := make([]runtime.Info, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		out = append(out, sb.info())
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Destroy removes a sandbox and everything it had. Idempotent.
func (r *Runtime) Destroy(ctx context.Context, id string) error {
	r.mu.Lock()
	sb := r.sandboxes[id]
	r.mu.Unlock()
	if sb == nil {
		return nil
	}
	sb.mu.Lock()
	if sb.cancel != nil {
		sb.cancel() // a Create in progress gives up and cleans after itself
	}
	sb.mu.Unlock()
	sb.life.Lock()
	defer sb.life.Unlock()
	sb.mu.Lock()
	gone := sb.gone
	sb.mu.Unlock()
	if gone {
		return nil
	}
	if err := r.teardown(ctx, sb, true); err != nil {
		sb.setStatus(runtime.StatusBroken)
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	r.forget(sb)
	return nil
}

// recover loads the sandboxes found in the data directory. A directory
// whose state cannot be read is a create that crashed early: removed.
func (r *Runtime) recover() error {
	root := filepath.Join(r.cfg.DataDir, "sandboxes")
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		id := e.Name()
		var st state
		b, err := os.ReadFile(filepath.Join(root, id, "state.json"))
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil || st.ID != id {
			r.cfg.Log.Warn("removing sandbox directory without a readable state", "sandbox", id, "err", err)
			sb := &sandbox{st: state{ID: id}}
			if err := r.teardown(context.Background(), sb, true); err != nil {
				r.cfg.Log.Error("remove broken sandbox directory", "sandbox", id, "err", err)
			}
			continue
		}
		sb := &sandbox{st: st, status: runtime.StatusStopped}
		if !st.Stopped {
			sb.status = runtime.StatusBroken
			if processAlive(st.Pid, st.PidStart) {
				sb.status = runtime.StatusRunning
				if r.cg.group(id).frozen() {
					sb.status = runtime.StatusFrozen
				}
				r.reattach(sb) // the last process's links died with it
			}
		}
		r.sandboxes[id] = sb
	}
	return nil
}
