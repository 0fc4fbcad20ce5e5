package linux_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/gpu/gputest"
	"github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
)

// gpuDevices is what the lifecycle service gives a sandbox holding GPU i
// of a stand-in host: its node, the shared ones, the environment.
func gpuDevices(h gputest.Host, i int, files ...runtime.DeviceFile) runtime.Devices {
	name := fmt.Sprintf("nvidia%d", i)
	return runtime.Devices{
		Nodes: []runtime.DeviceNode{
			{Path: h.Node(name), Name: name, Major: h.GPUMajor, Minor: uint32(i)},
			{Path: h.Node("nvidiactl"), Name: "nvidiactl", Major: h.GPUMajor, Minor: 255},
			{Path: h.Node("nvidia-uvm"), Name: "nvidia-uvm", Major: h.UVMMajor, Minor: 0},
			{Path: h.Node("nvidia-uvm-tools"), Name: "nvidia-uvm-tools", Major: h.UVMMajor, Minor: 1},
		},
		Files: files,
		Env:   []string{"CUDA_VISIBLE_DEVICES=" + gputest.UUID(i), "NVIDIA_VISIBLE_DEVICES=" + gputest.UUID(i)},
	}
}

// openScript opens each path read-write and prints OK or the errno's name.
const openScript = `import errno, os, sys
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_RDWR))
        print("OK")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
`

// opens opens paths in the sandbox as user and returns what happened.
func opens(t *testing.T, r runtime.Runtime, id, user string, paths ...string) []string {
	t.Helper()
	res := run(t, r, id, proc.Spec{Cmd: append([]string{"/usr/bin/python3", "-c", openScript}, paths...), User: user})
	if res.Code != 0 {
		t.Fatalf("open in the sandbox: %+v", res)
	}
	return strings.Fields(res.Stdout)
}

// deviceProcs is the cgroup.procs file a process must be in to be under
// the sandbox's device rules.
func deviceProcs(r *linux.Runtime, id string) string {
	if r.Capabilities().CgroupVersion == 2 {
		return filepath.Join("/sys/fs/cgroup", testCgroupParent, id, "cgroup.procs")
	}
	return filepath.Join("/sys/fs/cgroup/devices", testCgroupParent, id, "cgroup.procs")
}

// TestGPUDevices gives two sandboxes a stand-in GPU each and checks that
// each sees exactly its own nodes, can open them (ENXIO: the cgroup let
// the open through to a driver that is not there), and cannot reach the
// other's: not by path, not as root, not by mknod, and not even from a
// host process placed in its device cgroup (EPERM).
func TestGPUDevices(t *testing.T) {
	h := gputest.New(t, 2)
	r := openRuntime(t)
	a := createSandbox(t, r, runtime.Spec{Template: "base", Devices: gpuDevices(h, 0)})
	b := createSandbox(t, r, runtime.Spec{Template: "base", Devices: gpuDevices(h, 1)})
	plain := createSandbox(t, r, runtime.Spec{Template: "base"})

	std := []string{"fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
	for _, tc := range []struct {
		id, own, other string
	}{{a, "nvidia0", "nvidia1"}, {b, "nvidia1", "nvidia0"}} {
		want := slices.Sorted(slices.Values(append(slices.Clone(std), tc.own, "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")))
		if got := sortedCopy(strings.Fields(sh(t, r, tc.id, "ls -A /dev").Stdout)); !slices.Equal(got, want) {
			t.Errorf("%s: /dev holds %v, want %v", tc.id, got, want)
		}
		for _, user := range []string{"", "root"} {
			got := opens(t, r, tc.id, user, "/dev/"+tc.own, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
				"/dev/"+tc.other, h.Node(tc.other), "/dev/null")
			want := []string{"ENXIO", "ENXIO", "ENXIO", "ENXIO", "ENOENT", "ENOENT", "OK"}
			if !slices.Equal(got, want) {
				t.Errorf("%s as %q: opens %v, want %v", tc.id, user, got, want)
			}
		}
		// Root may not make the other's node; were it made, it would not open.
		mk := run(t, r, tc.id, proc.Spec{User: "root", Shell: fmt.Sprintf(
			"mknod /tmp/%s c %d %d; echo mknod=$?; python3 -c %q /tmp/%s", tc.other, h.GPUMajor, otherMinor(tc.other),
			`import os,sys,errno
try:
    os.open(sys.argv[1], os.O_RDWR); print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])`, tc.other)})
		if !strings.Contains(mk.Stdout, "mknod=1") || strings.Contains(mk.Stdout, "OK") || strings.Contains(mk.Stdout, "ENXIO") {
			t.Errorf("%s: mknod of the other's node: %+v", tc.id, mk)
		}
		env := sh(t, r, tc.id, "echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES").Stdout
		uuid := gputest.UUID(int(otherMinor(tc.own)))
		if env != uuid+" "+uuid+"\n" {
			t.Errorf("%s: env %q", tc.id, env)
		}
		// The device cgroup itself, from a host process in it.
		got := gputest.OpenFrom(t, []string{deviceProcs(r, tc.id)}, h.Node(tc.own), h.Node("nvidiactl"), h.Node(tc.other), "/dev/null")
		if want := []string{"ENXIO", "ENXIO", "EPERM", "OK"}; !slices.Equal(got, want) {
			t.Errorf("%s: opens from its device cgroup %v, want %v", tc.id, got, want)
		}
		// A read-only /sys.
		if res := sh(t, r, tc.id, "test -d /sys/class && ! touch /sys/x 2>/dev/null && echo ro"); res.Stdout != "ro\n" {
			t.Errorf("%s: /sys: %+v", tc.id, res)
		}
	}
	if got := strings.Fields(sh(t, r, plain, "ls /dev | grep -c nvidia; ls /sys | wc -l").Stdout); !slices.Equal(got, []string{"0", "0"}) {
		t.Errorf("a sandbox without GPUs: %v nvidia nodes and /sys entries", got)
	}

	// A reset in place keeps the devices (they are not a session's).
	restarted, err := r.Reset(context.Background(), a)
	if err != nil || restarted {
		t.Fatalf("reset: restarted %v, %v", restarted, err)
	}
	// Stopped, it can be given the other GPU; started, it has that one.
	if err := r.SetDevices(context.Background(), b, gpuDevices(h, 0)); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("devices changed while running: %v", err)
	}
	if err := r.Destroy(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(deviceProcs(r, b))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("device cgroup of a destroyed sandbox: %v", err)
	}
	if err := r.Stop(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := r.SetDevices(context.Background(), a, gpuDevices(h, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if got := opens(t, r, a, "", "/dev/nvidia1", "/dev/nvidia0"); !slices.Equal(got, []string{"ENXIO", "ENOENT"}) {
		t.Errorf("after a start with the other GPU: %v", got)
	}
	if got := gputest.OpenFrom(t, []string{deviceProcs(r, a)}, h.Node("nvidia1"), h.Node("nvidia0")); !slices.Equal(got, []string{"ENXIO", "EPERM"}) {
		t.Errorf("after a start with the other GPU, from its cgroup: %v", got)
	}
}

func otherMinor(name string) uint32 {
	var n uint32
	_, _ = fmt.Sscanf(name, "nvidia%d", &n) // names made by the test
	return n
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestGPUImageTemplate: an image template without the host's /usr sees
// the driver's files (stand-ins) read-only in /usr/local/nvidia, found
// through LD_LIBRARY_PATH and PATH, over what the image sets; nothing of
// that is written to its writable layer, so a reset stays in place.
func TestGPUImageTemplate(t *testing.T) {
	h := gputest.New(t, 1)
	lib := filepath.Join(h.Root, "usr/lib/libcuda.so.580.0.1")
	smi := filepath.Join(h.Root, "usr/bin/nvidia-smi")
	for p, body := range map[string]string{lib: "stand-in libcuda", smi: "#!/bin/sh\necho stand-in nvidia-smi \"$@\"\n"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := openRuntime(t)
	defaults := runtime.Defaults{Env: []string{"PATH=/bin:/usr/bin", "LD_LIBRARY_PATH=/opt/lib", "CUDA_VISIBLE_DEVICES=all"}}
	layeredTemplate(t, r, "cuda", defaults, imagetest.Busybox(t))
	files := []runtime.DeviceFile{{Src: lib, Dst: "lib64/libcuda.so.1"}, {Src: lib, Dst: "lib64/libcuda.so"}, {Src: smi, Dst: "bin/nvidia-smi"}}
	id := createSandbox(t, r, runtime.Spec{Template: "cuda", Devices: gpuDevices(h, 0, files...)})

	got := sh(t, r, id, `cat /usr/local/nvidia/lib64/libcuda.so.1; echo; cat /usr/local/nvidia/lib64/libcuda.so; echo
echo "$LD_LIBRARY_PATH|$PATH|$CUDA_VISIBLE_DEVICES"; nvidia-smi -L
echo x > /usr/local/nvidia/lib64/libcuda.so.1 2>/dev/null || echo ro-lib
touch /usr/local/nvidia/new 2>/dev/null || echo ro-dir
ls /dev | grep nvidia | tr '\n' ' '`)
	want := "stand-in libcuda\nstand-in libcuda\n/usr/local/nvidia/lib64:/opt/lib|/bin:/usr/bin:/usr/local/nvidia/bin|" + gputest.UUID(0) +
		"\nstand-in nvidia-smi -L\nro-lib\nro-dir\nnvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl "
	if got.Stdout != want {
		t.Fatalf("in the sandbox:\n%q\nwant\n%q (stderr %q)", got.Stdout, want, got.Stderr)
	}
	root := sh(t, r, id, "id -u; ls /usr/local/nvidia/lib64").Stdout
	if !strings.Contains(root, "libcuda.so.1") {
		t.Fatalf("as root: %q", root)
	}
	upper, err := os.ReadDir(filepath.Join(r.DataDir(), "sandboxes", id, "upper"))
	if err != nil || len(upper) != 0 {
		t.Fatalf("writable layer holds %v (%v)", upper, err)
	}
	if restarted, err := r.Reset(context.Background(), id); err != nil || restarted {
		t.Fatalf("reset: restarted %v, %v", restarted, err)
	}
}

// TestGPUDevicesValidate refuses device specs that could name /dev's own
// entries or climb out of the driver's directory.
func TestGPUDevicesValidate(t *testing.T) {
	r := openRuntime(t)
	for _, d := range []runtime.Devices{
		{Nodes: []runtime.DeviceNode{{Path: "/dev/null", Name: "null"}}},
		{Nodes: []runtime.DeviceNode{{Path: "/dev/x", Name: "../x"}}},
		{Nodes: []runtime.DeviceNode{{Path: "dev/x", Name: "x"}}},
		{Nodes: []runtime.DeviceNode{{Path: "/dev/x", Name: "x"}, {Path: "/dev/y", Name: "x"}}},
		{Files: []runtime.DeviceFile{{Src: "/lib/x.so", Dst: "../../etc/passwd"}}},
		{Files: []runtime.DeviceFile{{Src: "/lib/x.so", Dst: "etc/x"}}},
		{Files: []runtime.DeviceFile{{Src: "lib/x.so", Dst: "lib64/x.so"}}},
		{Env: []string{"NOEQUALS"}},
		{Env: []string{"=x"}},
	} {
		if err := r.Validate(runtime.Spec{Template: "base", Devices: d}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%+v: %v", d, err)
		}
	}
	if err := r.Validate(runtime.Spec{Template: "base", Limits: runtime.Limits{GPUs: -1}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("gpus -1: %v", err)
	}
}

// BenchmarkCreateGPU measures create-to-ready of a base sandbox given a
// stand-in GPU, against one without, alternating so both see the same
// load: what the device nodes, the device cgroup and /sys cost.
func BenchmarkCreateGPU(b *testing.B) {
	h := gputest.New(b, 1)
	r := openRuntime(b)
	ctx := context.Background()
	var with, without []time.Duration
	for i := 0; b.Loop(); i++ {
		spec := runtime.Spec{Template: "base"}
		if i%2 == 0 {
			spec.Devices = gpuDevices(h, 0)
		}
		start := time.Now()
		info, err := r.Create(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if i%2 == 0 {
			with = append(with, d)
		} else {
			without = append(without, d)
		}
		b.StopTimer()
		if err := r.Destroy(ctx, info.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	p50 := func(s []time.Duration) float64 {
		if len(s) == 0 {
			return 0
		}
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(with), "gpu-p50-ms")
	b.ReportMetric(p50(without), "plain-p50-ms")
	b.ReportMetric(0, "ns/op")
}
