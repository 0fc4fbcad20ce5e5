package linux

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/internal/gpu/gputest"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/runtime"
)

// v2Root finds a cgroup v2 hierarchy: /sys/fs/cgroup itself, or the
// unified one of a hybrid host (where device programs apply as well).
func v2Root(t *testing.T) string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	t.Skip("no cgroup v2 hierarchy on this host: device programs cannot be attached")
	return ""
}

// TestDeviceFilterV2 attaches the BPF device program to a cgroup v2 group
// and opens stand-in GPU nodes from a process in it: its own GPU and the
// shared nodes are allowed (ENXIO: no driver), the other GPU refused
// (EPERM); /dev/null still works.
func TestDeviceFilterV2(t *testing.T) {
	root := v2Root(t)
	h := gputest.New(t, 2)
	dir := filepath.Join(root, "sandpool-devtest-"+ids.Suffix())
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Rmdir(dir) }) // empty once the helper exited
	nodes := []runtime.DeviceNode{
		{Path: h.Node("nvidia0"), Name: "nvidia0", Major: h.GPUMajor, Minor: 0},
		{Path: h.Node("nvidiactl"), Name: "nvidiactl", Major: h.GPUMajor, Minor: 255},
		{Path: h.Node("nvidia-uvm"), Name: "nvidia-uvm", Major: h.UVMMajor, Minor: 0},
	}
	if err := attachDeviceFilter(dir, deviceRules(nodes)); err != nil {
		t.Fatal(err)
	}
	got := gputest.OpenFrom(t, []string{filepath.Join(dir, "cgroup.procs")},
		h.Node("nvidia0"), h.Node("nvidiactl"), h.Node("nvidia-uvm"), h.Node("nvidia1"), h.Node("nvidia-uvm-tools"), "/dev/null")
	want := []string{"ENXIO", "ENXIO", "ENXIO", "EPERM", "EPERM", "OK"}
	if !slices.Equal(got, want) {
		t.Fatalf("opens from the group: %v, want %v", got, want)
	}
	// The same nodes from outside the group: nothing refused.
	if got := gputest.OpenFrom(t, nil, h.Node("nvidia1")); got[0] != "ENXIO" {
		t.Fatalf("outside the group: %v", got)
	}
}

func TestDeviceFilterProgram(t *testing.T) {
	rules := []deviceRule{{Major: 195, Minor: 3}, {Major: 136, Minor: -1}}
	prog := deviceFilter(rules)
	// 6 loads, an 8-instruction block with a minor test, a 7-instruction
	// one without, the default deny.
	if len(prog) != 6+8+7+2 {
		t.Fatalf("%d instructions", len(prog))
	}
	for i, in := range prog {
		if in.code == bpfJneImm || in.code == bpfJneReg {
			target := i + 1 + int(in.off)
			if target >= len(prog) || (prog[target-1].code != bpfExit) {
				t.Errorf("jump %d lands at %d, not after a block's exit", i, target)
			}
		}
	}
	if got := (deviceRule{Major: 136, Minor: -1}).v1(); got != "c 136:* rw" {
		t.Errorf("v1 rule %q", got)
	}
	if got := (deviceRule{Major: 195, Minor: 255}).v1(); got != "c 195:255 rw" {
		t.Errorf("v1 rule %q", got)
	}
	if b := encodeBPF(prog[:1]); len(b) != 8 || b[0] != bpfLdxMemW || b[1] != 2|1<<4 {
		t.Errorf("encoding %x", b)
	}
}

// BenchmarkAttachDeviceFilter measures what cgroup v2 adds to a GPU
// sandbox's create: assembling, loading and attaching its device program.
func BenchmarkAttachDeviceFilter(b *testing.B) {
	var root string
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = p
		}
	}
	if root == "" {
		b.Skip("no cgroup v2 hierarchy")
	}
	rules := deviceRules([]runtime.DeviceNode{{Major: 195, Minor: 0}, {Major: 195, Minor: 255}, {Major: 238, Minor: 0}, {Major: 238, Minor: 1}})
	for b.Loop() {
		b.StopTimer()
		dir := filepath.Join(root, "sandpool-devbench-"+ids.Suffix())
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := attachDeviceFilter(dir, rules); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := unix.Rmdir(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
