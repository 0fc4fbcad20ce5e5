// Package runtime defines what the lifecycle service needs from an isolation
// backend: create a sandbox, run processes and move files in it, freeze and
// thaw it, stop it while keeping its writable layer, snapshot that layer, and
// destroy it. Backends live in subpackages (linux today, gVisor planned); a
// capability a backend lacks is reported by Capabilities, never faked.
package runtime

import (
	"context"
	"io"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
)

// Runtime is an isolation backend. All methods are safe for concurrent use.
type Runtime interface {
	// Capabilities reports what this backend can do.
	Capabilities() Capabilities

	// Validate checks spec as Create would, without making anything.
	Validate(spec Spec) error
	// Create makes a sandbox from spec and returns once its agent answers.
	// On error nothing of the sandbox is left behind.
	Create(ctx context.Context, spec Spec) (Info, error)
	// Get reports one sandbox; ErrNotFound if it does not exist.
	Get(ctx context.Context, id string) (Info, error)
	// List reports every sandbox this runtime has, including those found in
	// its data directory that an earlier process created.
	List(ctx context.Context) ([]Info, error)
	// Destroy kills every process of the sandbox and removes its cgroups,
	// mounts and files. Destroying a sandbox that does not exist is not an
	// error, and a Create in progress for id is cancelled.
	Destroy(ctx context.Context, id string) error

	// Freeze stops every process of the sandbox without losing memory;
	// Thaw lets them run again.
	Freeze(ctx context.Context, id string) error
	Thaw(ctx context.Context, id string) error
	// Stop kills every process but keeps the writable layer on disk;
	// Start boots the sandbox again on the same files.
	Stop(ctx context.Context, id string) error
	Start(ctx context.Context, id string) (Info, error)
	// Reset returns a running sandbox to the state it had when it was made
	// or last sealed: every process killed, every file written since
	// discarded. restarted reports whether that took a fresh boot.
	Reset(ctx context.Context, id string) (restarted bool, err error)
	// Seal makes the sandbox's current files the state Reset returns to.
	Seal(ctx context.Context, id string) error
	// Ping is one round trip to the sandbox's agent: a health check.
	Ping(ctx context.Context, id string) error
	// MemoryUsage is the memory the sandbox's processes use themselves
	// (anonymous memory), in bytes.
	MemoryUsage(ctx context.Context, id string) (int64, error)
	// Snapshot writes the sandbox's writable layer to w as a tar stream.
	Snapshot(ctx context.Context, id string, w io.Writer) error

	// SetNetwork changes a sandbox's egress policy: connections and DNS
	// queries it makes from then on are judged by it (open connections
	// are left alone). A stopped sandbox gets it at its next Start.
	SetNetwork(ctx context.Context, id string, n Network) error
	// NetworkStats reports a sandbox's traffic out, counted since this
	// process found or made it.
	NetworkStats(ctx context.Context, id string) (NetworkStats, error)

	// Exec starts a process. It returns once the process has started (or
	// failed to start: a missing command is a *UserError). Output is copied
	// to stdio as it is produced.
	Exec(ctx context.Context, id string, spec proc.Spec, stdio proc.Stdio) (proc.Process, error)
	// Attach connects to a background process, replaying the output it
	// kept, then following it live.
	Attach(ctx context.Context, id, procID string, stdio proc.Stdio) (proc.Process, error)
	// AttachLive connects to a process and follows its output from now
	// on, without replaying what it kept.
	AttachLive(ctx context.Context, id, procID string, stdio proc.Stdio) (proc.Process, error)
	// ResizePTY gives the terminal of a process started with a PTY a new
	// size.
	ResizePTY(ctx context.Context, id, procID string, size proc.Size) error
	// Processes lists the processes started through Exec that the sandbox
	// still tracks (running ones, and background ones that have exited).
	Processes(ctx context.Context, id string) ([]proc.Info, error)
	// Signal sends sig to a process started through Exec.
	Signal(ctx context.Context, id, procID string, sig syscall.Signal) error
	// KillAll kills every process of the sandbox but its agent and returns
	// how many there were.
	KillAll(ctx context.Context, id string) (int, error)
	// WriteStdin copies r to a tracked process's stdin, closing it
	// afterwards if closeStdin.
	WriteStdin(ctx context.Context, id, procID string, r io.Reader, closeStdin bool) error

	// Files gives access to the sandbox's filesystem.
	Files(id string) fsys.Files
	// DialPort connects to a TCP port on the sandbox's own loopback,
	// whatever network the sandbox has. A port nothing listens on is an
	// error of kind ErrUnavailable.
	DialPort(ctx context.Context, id string, port int) (net.Conn, error)
	// Metrics measures what the sandbox uses now.
	Metrics(ctx context.Context, id string) (Metrics, error)

	// Templates lists the templates sandboxes can be made from.
	Templates(ctx context.Context) ([]Template, error)
	// ImportTemplate registers a template from a root filesystem, given as
	// a directory on the host or a tar stream.
	ImportTemplate(ctx context.Context, name string, src TemplateSource) (Template, error)
	// DeleteTemplate removes a template no sandbox uses.
	DeleteTemplate(ctx context.Context, name string) error
}

// Capabilities says what a backend supports.
type Capabilities struct {
	// Name of the backend ("linux", "gvisor").
	Name string `json:"name"`
	// FreezeKeepsMemory: a frozen sandbox keeps its processes and memory.
	FreezeKeepsMemory bool `json:"freeze_keeps_memory"`
	// SnapshotIncludesMemory: Snapshot captures process memory, so Start
	// after Stop resumes processes. False for linux: files only.
	SnapshotIncludesMemory bool `json:"snapshot_includes_memory"`
	// DiskLimit: Limits.DiskBytes is enforced.
	DiskLimit bool `json:"disk_limit"`
	// Egress: sandboxes can be given a network path out (Network modes
	// other than none).
	Egress bool `json:"egress"`
	// CgroupVersion is 1 or 2.
	CgroupVersion int `json:"cgroup_version"`
	// Defaults are the limits a Spec gets where it leaves zero.
	Defaults Limits `json:"defaults"`
}

// WithDefaults fills the zero fields of l from d.
func (l Limits) WithDefaults(d Limits) Limits {
	if l.CPUs == 0 {
		l.CPUs = d.CPUs
	}
	if l.MemoryBytes == 0 {
		l.MemoryBytes = d.MemoryBytes
	}
	if l.Pids == 0 {
		l.Pids = d.Pids
	}
	if l.DiskBytes == 0 {
		l.DiskBytes = d.DiskBytes
	}
	if l.GPUs == 0 {
		l.GPUs = d.GPUs
	}
	return l
}

// Spec says how to make a sandbox.
type Spec struct {
	// ID names the sandbox; empty means generate one.
	ID string
	// Template names the root filesystem ("base" is built in).
	Template string
	// Hostname inside the sandbox; empty means "sandbox".
	Hostname string
	Limits   Limits
	// Layers, when set, are the sandbox's read-only layers (directories,
	// lowest first) instead of Template's files, with nothing of the host
	// bound in; Template then only names where they came from. The
	// writable layer over them is kept plain (no overlayfs redirects or
	// metacopy), so that once the sandbox is stopped it can be stored as
	// an image layer: what a Dockerfile's RUN step needs.
	Layers []string
	// Network is the sandbox's egress policy; the zero value is mode none.
	Network Network
	// Devices are what the sandbox is given of the host's devices (its
	// GPUs); the zero value gives none.
	Devices Devices
}

// DriverDir is where a sandbox given Devices.Files sees them, unless its
// template shows the host's own /usr (base): libraries in DriverDir/lib64
// (first on LD_LIBRARY_PATH), programs in DriverDir/bin (on PATH). It is
// where CUDA images look for the host's driver (their LD_LIBRARY_PATH and
// PATH name it already).
const DriverDir = "/usr/local/nvidia"

// Devices are host devices given to a sandbox, as plain data: the service
// picks them (a GPU and the driver's shared nodes), the backend makes the
// sandbox see them and nothing else.
type Devices struct {
	// Nodes are character devices bound into the sandbox's /dev under
	// their names. A sandbox with nodes gets a device cgroup that allows
	// them and the devices every sandbox has (null, zero, full, random,
	// urandom, tty, ptmx and its pseudo-terminals), read and write only,
	// and refuses every other device, mknod included.
	Nodes []DeviceNode `json:"nodes,omitempty"`
	// Files are the driver's user-space files (libraries, programs),
	// bound read-only at DriverDir/Dst.
	Files []DeviceFile `json:"files,omitempty"`
	// Env is KEY=VALUE pairs the sandbox's processes get over its
	// template's (and under a call's): CUDA_VISIBLE_DEVICES, say.
	Env []string `json:"env,omitempty"`
}

// Empty reports whether d gives nothing.
func (d Devices) Empty() bool { return len(d.Nodes) == 0 && len(d.Files) == 0 && len(d.Env) == 0 }

// DeviceNode is a host character device, seen in the sandbox as /dev/Name.
type DeviceNode struct {
	Path  string `json:"path"`
	Name  string `json:"name"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// DeviceFile is a host file (Src) seen read-only in the sandbox at
// DriverDir/Dst: "lib64/libcuda.so.1", "bin/nvidia-smi".
type DeviceFile struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// Defaults are what a sandbox's processes and file operations get when a
// call leaves them out: a template's (an image's config). The zero value
// is sandpool's own: user "user", the agent's environment, the user's home.
type Defaults struct {
	// User is a name, a uid, or uid:gid; empty means "user".
	User string `json:"user,omitempty"`
	// Env is KEY=VALUE pairs, over the agent's own environment (PATH,
	// HOME, ...) and under a call's.
	Env []string `json:"env,omitempty"`
	// Cwd is the working directory; empty means the user's home.
	Cwd string `json:"cwd,omitempty"`
}

// Egress modes of a Network.
const (
	EgressNone      = "none"      // no way out: loopback only
	EgressOpen      = "open"      // every public address, less Deny
	EgressAllowlist = "allowlist" // only Allow, less Deny
)

// Network is a sandbox's egress policy, as plain data: what it may reach
// outside itself. The backend checks it (Validate) and enforces it from
// outside the sandbox. Entries of Allow (allowlist mode only) and Deny
// are CIDRs, IP addresses, host names and "*." wildcards. Whatever the
// policy, the host's own addresses, other sandboxes and private,
// loopback and link-local ranges are never reached unless the operator
// allowed a range.
type Network struct {
	// Egress is "none" (also ""), "open" or "allowlist".
	Egress string   `json:"egress"`
	Allow  []string `json:"allow,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// Mode is Egress, with "" read as none.
func (n Network) Mode() string {
	if n.Egress == "" {
		return EgressNone
	}
	return n.Egress
}

// Equal reports whether n and o are the same policy.
func (n Network) Equal(o Network) bool {
	return n.Mode() == o.Mode() && slices.Equal(n.Allow, o.Allow) && slices.Equal(n.Deny, o.Deny)
}

// NetworkStats count a sandbox's traffic out.
type NetworkStats struct {
	// BytesOut and BytesIn are TCP payload relayed, sandbox to the
	// outside and back.
	BytesOut uint64 `json:"bytes_out"`
	BytesIn  uint64 `json:"bytes_in"`
	// Connections counts TCP connections let through; Refused those
	// refused by the policy (or the always-refused ranges, or limits);
	// Failed those let through whose destination did not answer.
	Connections uint64 `json:"connections"`
	Refused     uint64 `json:"refused"`
	Failed      uint64 `json:"failed"`
	// Active is the number of TCP connections open now.
	Active int64 `json:"active"`
	// DNSQueries counts DNS queries answered or refused; DNSRefused
	// those refused because the policy does not allow the name.
	DNSQueries uint64 `json:"dns_queries"`
	DNSRefused uint64 `json:"dns_refused"`
}

// Add returns the sum of s and o (Active is o's: only a live link has
// open connections).
func (s NetworkStats) Add(o NetworkStats) NetworkStats {
	return NetworkStats{BytesOut: s.BytesOut + o.BytesOut, BytesIn: s.BytesIn + o.BytesIn,
		Connections: s.Connections + o.Connections, Refused: s.Refused + o.Refused, Failed: s.Failed + o.Failed,
		Active: o.Active, DNSQueries: s.DNSQueries + o.DNSQueries, DNSRefused: s.DNSRefused + o.DNSRefused}
}

// Limits bound what a sandbox may use. Zero means the backend default.
type Limits struct {
	// CPUs is the CPU time allowed, in cores (0.5 = half a core).
	CPUs float64 `json:"cpus,omitempty"`
	// MemoryBytes caps memory; exceeding it OOM-kills inside the sandbox.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// Pids caps the number of processes and threads.
	Pids int64 `json:"pids,omitempty"`
	// DiskBytes caps the writable layer.
	DiskBytes int64 `json:"disk_bytes,omitempty"`
	// GPUs is how many of the host's GPUs the sandbox gets, each its own
	// (the lifecycle service picks them and gives them as Spec.Devices).
	GPUs int `json:"gpus,omitempty"`
}

// Metrics are what a sandbox uses, measured from its cgroup and its
// writable layer.
type Metrics struct {
	// Timestamp is when they were measured.
	Timestamp time.Time `json:"timestamp"`
	// CPUCount is the CPUs the sandbox may use (its limit, rounded up);
	// CPUUsedPct how busy it kept them since the last measurement (or
	// since it started), 100 meaning all of them all the time.
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	// MemUsedBytes is the memory its processes use without the page
	// cache, MemCacheBytes the page cache charged to it, MemTotalBytes its
	// limit.
	MemUsedBytes  int64 `json:"mem_used_bytes"`
	MemCacheBytes int64 `json:"mem_cache_bytes"`
	MemTotalBytes int64 `json:"mem_total_bytes"`
	// DiskUsedBytes is what its writable layers hold on disk;
	// DiskTotalBytes its disk limit, or without one the size of the
	// filesystem they are on.
	DiskUsedBytes  int64 `json:"disk_used_bytes"`
	DiskTotalBytes int64 `json:"disk_total_bytes"`
}

// Status of a sandbox as the runtime sees it.
type Status string

const (
	StatusRunning Status = "running" // agent up, processes may run
	StatusFrozen  Status = "frozen"  // every process stopped, memory kept
	StatusStopped Status = "stopped" // no process; writable layer kept
	StatusBroken  Status = "broken"  // should be running but is not answering
)

// Info describes one sandbox.
type Info struct {
	ID        string    `json:"id"`
	Template  string    `json:"template"`
	Status    Status    `json:"status"`
	Limits    Limits    `json:"limits"`
	CreatedAt time.Time `json:"created_at"`
	// Pid of the sandbox's PID 1 on the host; 0 when stopped.
	Pid int `json:"pid,omitempty"`
	// Network is the sandbox's egress policy. NetworkDetached says that a
	// running sandbox whose policy lets it out has no path out now (its
	// link could not be made again after a restart); SetNetwork retries.
	Network         Network `json:"network"`
	NetworkDetached bool    `json:"network_detached,omitempty"`
}

// Template is something a sandbox can be made from.
type Template struct {
	Name      string    `json:"name"`
	BuiltIn   bool      `json:"built_in"`
	CreatedAt time.Time `json:"created_at"`
	SizeBytes int64     `json:"size_bytes"`
	// Origin says where its files came from, as ImportTemplate was told.
	Origin string `json:"origin,omitempty"`
	// Layers is how many read-only layers its sandboxes are made of.
	Layers int `json:"layers,omitempty"`
	// Defaults for its sandboxes' processes.
	Defaults Defaults `json:"defaults,omitzero"`
}

// TemplateSource is where ImportTemplate reads a root filesystem from:
// exactly one of Dir (a directory on the host), Tar and Layers.
type TemplateSource struct {
	Dir string
	Tar io.Reader
	// Layers are directories, lowest first, used as they are (not
	// copied) as the template's read-only layers: an image's layers in
	// the image store, owners already shifted into the sandbox range.
	// They must outlive the template.
	Layers []string
	// Defaults for the processes of its sandboxes.
	Defaults Defaults
	// Origin says where it came from, for people ("image
	// registry.example/app:1@sha256:...").
	Origin string
	// SizeBytes is the size to report for a template made of Layers.
	SizeBytes int64
}
