package linux

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/runtime"
)

// The v2 driver cannot run for real on this cgroup v1 host; this checks the
// files and values it writes, on a plain directory standing in for the
// cgroup2 mount.
func TestCgroupV2Files(t *testing.T) {
	parent := t.TempDir()
	d := &cgroupDriver{version: 2, parents: map[string]string{"": parent}}
	g := d.group("sb1")
	if err := g.create(runtime.Limits{CPUs: 1.5, MemoryBytes: 256 << 20, Pids: 100}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cpu.max":         "150000 100000",
		"memory.max":      "268435456",
		"memory.swap.max": "0",
		"pids.max":        "100",
	}
	for f, v := range want {
		b, err := os.ReadFile(filepath.Join(parent, "sb1", f))
		if err != nil || strings.TrimSpace(string(b)) != v {
			t.Errorf("%s = %q (%v), want %q", f, b, err, v)
		}
	}
	if err := g.add(42); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "sb1", "cgroup.procs")); string(b) != "42" {
		t.Errorf("cgroup.procs = %q", b)
	}
	os.WriteFile(filepath.Join(parent, "sb1", "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"), 0o644)
	if n := g.oomKills(); n != 2 {
		t.Errorf("oomKills = %d, want 2", n)
	}
	if err := g.thaw(); err != nil || g.frozen() {
		t.Errorf("thaw: %v frozen=%v", err, g.frozen())
	}
}

func TestCgroupV1OnThisHost(t *testing.T) {
	parent := "sandpool-unit-" + strconv.Itoa(os.Getpid())
	d, err := newCgroupDriver("/sys/fs/cgroup", parent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, dir := range append(slices.Collect(maps.Values(d.parents)), d.devices) {
			os.Remove(dir) // empty once the group is gone
		}
	})
	if d.version != 1 {
		t.Skip("host uses cgroup v2: covered by the runtime tests")
	}
	g := d.group("cg-unit-test")
	if err := g.create(runtime.Limits{CPUs: 0.25, MemoryBytes: 64 << 20, Pids: 32}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.remove(t.Context()) })
	for file, want := range map[string]string{
		"cpu/cpu.cfs_quota_us":         "25000",
		"memory/memory.limit_in_bytes": "67108864",
		"pids/pids.max":                "32",
	} {
		ctrl, name, _ := strings.Cut(file, "/")
		b, err := os.ReadFile(filepath.Join(g.dir(ctrl), name))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q (%v), want %q", file, b, err, want)
		}
	}
	if err := g.remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if g.exists() {
		t.Fatal("cgroup still exists after remove")
	}
}
