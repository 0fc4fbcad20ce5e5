// Package gpu finds the host's NVIDIA GPUs and hands them to sandboxes:
// Discover reads the device nodes (/dev/nvidia<N>, nvidiactl, nvidia-uvm,
// nvidia-uvm-tools), the driver's /proc files and the loader cache (the
// driver's user-space libraries) under a root directory, so tests can point
// it at a stand-in set of character devices; a Set hands GPUs out to
// holders (sandbox ids), each GPU to one holder unless sharing is on, and
// is safe for concurrent use. Nothing here needs cgo or NVML.
package gpu

import (
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/internal/errdefs"
)

// Errors a create asking for GPUs may get.
var (
	// ErrExhausted: fewer GPUs are free than asked for; trying later (or
	// a pool with the wait policy) may work.
	ErrExhausted = errdefs.New(errdefs.ErrConflict, "gpus_exhausted", "not enough free GPUs")
	// ErrNone: the node hands out no GPUs (none found, or serve was told
	// --gpus none).
	ErrNone = errdefs.New(errdefs.ErrInvalid, "no_gpus", "this node has no GPUs to hand out")
)

// Device is a character device node of the host.
type Device struct {
	// Path is the node's path on the host; Name its name under the
	// sandbox's /dev ("nvidia0", "nvidiactl").
	Path  string `json:"path"`
	Name  string `json:"name"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// GPU is one GPU of the host.
type GPU struct {
	// Index is N of its node /dev/nvidiaN: the driver's device minor
	// number, what --gpus names and the store records.
	Index int    `json:"index"`
	UUID  string `json:"uuid,omitempty"`
	Model string `json:"model,omitempty"`
	// BusID is its PCI address (0000:01:00.0).
	BusID string `json:"bus_id,omitempty"`
	// MemoryBytes is its memory, when nvidia-smi could say; 0 if unknown.
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	Device      Device `json:"-"`
}

// File is a file of the driver's user space given to a sandbox: Src on
// the host, seen in the sandbox under Name (a library's name as the
// loader cache lists it, "libcuda.so.1"; a tool's, "nvidia-smi").
type File struct {
	Src  string `json:"src"`
	Name string `json:"name"`
}

// Host is what Discover found.
type Host struct {
	// GPUs are the GPUs found, by Index.
	GPUs []GPU `json:"gpus"`
	// Control are the nodes every GPU sandbox gets besides its GPUs':
	// nvidiactl, nvidia-uvm and nvidia-uvm-tools, those that exist.
	Control []Device `json:"control,omitempty"`
	// Libraries are the driver's user-space libraries (libcuda,
	// libnvidia-ml, libnvidia-ptxjitcompiler, ...) as the loader cache
	// lists them; Tools its programs (nvidia-smi).
	Libraries []File `json:"libraries,omitempty"`
	Tools     []File `json:"tools,omitempty"`
	// Driver is the kernel driver's version, if /proc says.
	Driver string `json:"driver,omitempty"`
	// Notes say what was looked for and not found (no nvidia-uvm, no
	// libcuda): sandboxes may not be able to use the GPUs.
	Notes []string `json:"notes,omitempty"`
}

// Select keeps the GPUs spec names: "all" (or ""), "none", or a comma
// list of indexes and UUIDs ("0,2", "GPU-6f2..."). A name that is not
// found is an error that says which.
func (h Host) Select(spec string) ([]GPU, error) {
	switch strings.TrimSpace(spec) {
	case "", "all":
		return h.GPUs, nil
	case "none":
		return nil, nil
	}
	var out []GPU
	seen := map[int]bool{}
	for _, name := range strings.Split(spec, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, g := range h.GPUs {
			if strconv.Itoa(g.Index) == name || (g.UUID != "" && strings.EqualFold(g.UUID, name)) {
				found = true
				if !seen[g.Index] {
					seen[g.Index] = true
					out = append(out, g)
				}
				break
			}
		}
		if !found {
			return nil, errdefs.Userf(errdefs.ErrInvalid, "GPU %q not found: this host has %s", name, h.describe())
		}
	}
	return out, nil
}

func (h Host) describe() string {
	if len(h.GPUs) == 0 {
		return "none"
	}
	names := make([]string, len(h.GPUs))
	for i, g := range h.GPUs {
		names[i] = strconv.Itoa(g.Index)
		if g.UUID != "" {
			names[i] += " (" + g.UUID + ")"
		}
	}
	return strings.Join(names, ", ")
}

// Env is what a sandbox holding gpus is told of them:
// CUDA_VISIBLE_DEVICES (UUIDs, which CUDA accepts, or, without them,
// 0..n-1: a sandbox enumerates only its own) and NVIDIA_VISIBLE_DEVICES
// (UUIDs, or the host's indexes), so programs and images that read them
// agree with what the sandbox can open.
func Env(gpus []GPU) []string {
	if len(gpus) == 0 {
		return nil
	}
	uuids, local, host := make([]string, len(gpus)), make([]string, len(gpus)), make([]string, len(gpus))
	all := true
	for i, g := range gpus {
		uuids[i], local[i], host[i] = g.UUID, strconv.Itoa(i), strconv.Itoa(g.Index)
		all = all && g.UUID != ""
	}
	if all {
		list := strings.Join(uuids, ",")
		return []string{"CUDA_VISIBLE_DEVICES=" + list, "NVIDIA_VISIBLE_DEVICES=" + list}
	}
	return []string{"CUDA_VISIBLE_DEVICES=" + strings.Join(local, ","), "NVIDIA_VISIBLE_DEVICES=" + strings.Join(host, ",")}
}

// FormatIndexes and ParseIndexes write and read a list of GPU indexes as
// the store keeps it: "0,2"; "" for none.
func FormatIndexes(idx []int) string {
	s := make([]string, len(idx))
	for i, n := range idx {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// ParseIndexes reads what FormatIndexes wrote.
func ParseIndexes(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]int, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return nil, errdefs.Userf(errdefs.ErrInvalid, "GPU list %q: want indexes such as 0,2", s)
		}
		out = append(out, n)
	}
	return out, nil
}
