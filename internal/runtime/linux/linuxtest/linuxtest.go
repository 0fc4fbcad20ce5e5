// Package linuxtest helps other packages' tests run real sandboxes: a test
// binary must be able to serve as a sandbox's PID 1 (Main), and each test
// gets its own runtime in a temporary directory (Open).
package linuxtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// CgroupParent is where test sandboxes get their cgroups: one per test
// process, so test binaries run at the same time (go test runs packages
// in parallel) never see each other's sandboxes; Main removes it. A
// process the test binary starts (a helper that plays a server killed
// mid-way, the re-exec into a network namespace) inherits it through
// the environment, so what a helper leaves is the test's to clean up
// and goes with the test's parent group.
var CgroupParent = cgroupParent()

// cgroupParentEnv passes CgroupParent to the test binary's children.
const cgroupParentEnv = "SANDPOOL_TEST_CGROUP_PARENT"

func cgroupParent() string {
	if p := os.Getenv(cgroupParentEnv); p != "" {
		return p
	}
	p := "sandpool-test-" + strconv.Itoa(os.Getpid())
	_ = os.Setenv(cgroupParentEnv, p) // cannot fail for this name and value
	return p
}

// Main is a TestMain: it runs the sandbox init when the binary was started
// as one, else the tests, then checks that no goroutine leaked.
func Main(m *testing.M) {
	if linux.IsInit() {
		linux.Init()
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(Finish(code))
}

// RemoveCgroupParent removes this process's CgroupParent and returns
// the groups that kept it (none once every sandbox, spare and runtime of
// the tests is gone; what is left stays, for a person to look at).
func RemoveCgroupParent() []string {
	var left []string
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "freezer", "devices", "unified", ""} {
		dir := filepath.Join("/sys/fs/cgroup", c, CgroupParent)
		for attempt := 0; ; attempt++ {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			// Busy: groups under it, or tasks still leaving it.
			if !errors.Is(err, syscall.EBUSY) || attempt == 50 {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if e.IsDir() {
						left = append(left, filepath.Join(dir, e.Name()))
					}
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return left
}

// Finish removes CgroupParent at the end of a test binary whose tests
// ended with code, and turns a pass into a failure when anything of the
// tests' was left under it.
func Finish(code int) int {
	if left := RemoveCgroupParent(); len(left) > 0 && code == 0 {
		fmt.Fprintln(os.Stderr, "cgroups left under the tests' parent:", left)
		return 1
	}
	return code
}

// MainNet is Main for packages whose tests give sandboxes a network: the
// test binary first moves into a network namespace of its own
// (egresstest.Reexec), where the fake internet of package egresstest is
// built behind it, and closes that at the end.
func MainNet(m *testing.M) {
	if linux.IsInit() {
		linux.Init()
	}
	if code, done := egresstest.Reexec(); done {
		os.Exit(code)
	}
	code := m.Run()
	egresstest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(Finish(code))
}

// Engine returns an egress engine whose upstream resolver is the fake
// internet's (egresstest.Shared) and that reads no hosts file, with its
// metrics on reg (nil: none). It is closed when the test ends. Use it
// only under MainNet.
func Engine(tb testing.TB, reg prometheus.Registerer) *egress.Engine {
	tb.Helper()
	egresstest.Shared(tb)
	eng, err := egress.New(egress.Config{
		Resolvers: []netip.AddrPort{netip.AddrPortFrom(egresstest.UpstreamDNS, 53)},
		HostsFile: "-",
		Registry:  reg,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	return eng
}

// Open returns a runtime in a temporary directory; its sandboxes are
// destroyed and it is closed when the test ends.
func Open(tb testing.TB) *linux.Runtime {
	tb.Helper()
	return OpenAt(tb, tb.TempDir())
}

// OpenAt is Open on the data directory dir.
func OpenAt(tb testing.TB, dir string) *linux.Runtime {
	tb.Helper()
	return OpenWith(tb, linux.Config{DataDir: dir})
}

// OpenWith is Open with cfg (DataDir and CgroupParent default to a
// temporary directory and the tests' cgroup parent).
func OpenWith(tb testing.TB, cfg linux.Config) *linux.Runtime {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("sandbox tests need root (CI runs as root)")
	}
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = CgroupParent
	}
	r, err := linux.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := r.List(ctx)
		for _, sb := range list {
			if err := r.Destroy(ctx, sb.ID); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
		r.Close()
	})
	return r
}

// Leftovers lists what is left on the host of the sandboxes ids: their
// directories under dataDir (half-removed ones too), cgroups under
// CgroupParent, and processes (by their environment or their cgroup).
func Leftovers(dataDir string, ids []string) []string {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var left []string
	ents, _ := os.ReadDir(filepath.Join(dataDir, "sandboxes"))
	for _, e := range ents {
		if want[e.Name()] || want[strings.TrimPrefix(e.Name(), ".destroyed-")] {
			left = append(left, "directory "+e.Name())
		}
	}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "freezer", "unified"} {
		for id := range want {
			p := filepath.Join("/sys/fs/cgroup", c, CgroupParent, id)
			if _, err := os.Stat(p); err == nil {
				left = append(left, "cgroup "+p)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(p + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if id, ok := strings.CutPrefix(kv, "SANDPOOL_SANDBOX="); ok && want[id] {
				left = append(left, fmt.Sprintf("process %s of %s", p, id))
			}
		}
		cg, _ := os.ReadFile(p + "/cgroup")
		for id := range want {
			if strings.Contains(string(cg), "/"+CgroupParent+"/"+id+"\n") {
				left = append(left, fmt.Sprintf("process %s in the cgroup of %s", p, id))
			}
		}
	}
	return left
}

// InitPID returns the host PID of sandbox id's PID 1, as the runtime
// knows it; the test fails if there is none (a 0 given to kill(2) would
// signal the test's own process group).
func InitPID(tb testing.TB, r *linux.Runtime, id string) int {
	tb.Helper()
	in, err := r.Get(context.Background(), id)
	if err != nil || in.Pid <= 0 {
		tb.Fatalf("no PID 1 for sandbox %s: %+v %v", id, in, err)
	}
	return in.Pid
}

// Spares lists the spare PID 1s (see internal/runtime/linux/spare.go) of
// the runtime on dataDir that are still running: none may be once that
// runtime is closed or its process killed.
func Spares(dataDir string) []string {
	tag := "SANDPOOL_SANDBOX=" + linux.SpareTag(dataDir)
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(p + "/environ")
		if err == nil && strings.Contains(string(env), tag+"\x00") {
			out = append(out, "spare process "+p)
		}
	}
	return out
}
