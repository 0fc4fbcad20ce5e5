// Package gputest makes stand-in GPU hosts for tests on machines without
// a GPU: a directory with dev/nvidia<N>, nvidiactl, nvidia-uvm and
// nvidia-uvm-tools as real character devices (mknod, so tests run as
// root) of major numbers no driver of this kernel has, and the driver's
// /proc files. Opening such a node where the device cgroup allows it
// fails with ENXIO (no driver); where it refuses it, with EPERM: that is
// how a test tells allowed from refused. Point gpu.Discover (Options.Root)
// or `sandpool serve --gpu-root` at Root.
package gputest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Host is a stand-in GPU host.
type Host struct {
	// Root is the directory to discover under.
	Root string
	// GPUMajor is the major of dev/nvidia<N> (minor N) and of nvidiactl
	// (minor 255); UVMMajor that of nvidia-uvm (0) and nvidia-uvm-tools (1).
	GPUMajor, UVMMajor uint32
	N                  int
}

// UUID is the UUID the stand-in's GPU i reports.
func UUID(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

// New makes a stand-in host with n GPUs under a fresh directory that a
// sandbox's root (an unprivileged host uid) can walk through: bind
// mounts of its nodes are made from inside the sandbox.
func New(t testing.TB, n int) Host {
	t.Helper()
	majors, err := freeMajors(2)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// t.TempDir and the test's directory above it are 0700: open the way
	// to the nodes.
	for _, p := range []string{root, filepath.Dir(root)} {
		if p == filepath.Clean(os.TempDir()) {
			break
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := Host{Root: root, GPUMajor: majors[0], UVMMajor: majors[1], N: n}
	dev := filepath.Join(root, "dev")
	for _, d := range []string{dev, filepath.Join(root, "proc/driver/nvidia/gpus")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name string, major, minor uint32) {
		if err := unix.Mknod(filepath.Join(dev, name), unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatalf("mknod %s: %v", name, err)
		}
		// The mode asked for passes through the umask.
		if err := os.Chmod(filepath.Join(dev, name), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		mk("nvidia"+strconv.Itoa(i), h.GPUMajor, uint32(i))
		bus := fmt.Sprintf("0000:%02x:00.0", i+1)
		dir := filepath.Join(root, "proc/driver/nvidia/gpus", bus)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		info := fmt.Sprintf("Model: \t\t Stand-in GPU %d\nIRQ:   \t\t 0\nGPU UUID: \t %s\nBus Type: \t PCIe\nBus Location: \t %s\nDevice Minor: \t %d\nGPU Excluded:\t No\n",
			i, UUID(i), bus, i)
		if err := os.WriteFile(filepath.Join(dir, "information"), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("nvidiactl", h.GPUMajor, 255)
	mk("nvidia-uvm", h.UVMMajor, 0)
	mk("nvidia-uvm-tools", h.UVMMajor, 1)
	version := "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.0.1  Release Build  (stand-in)\n"
	if err := os.WriteFile(filepath.Join(root, "proc/driver/nvidia/version"), []byte(version), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// Node is the path of the stand-in's node name (nvidia0, nvidiactl).
func (h Host) Node(name string) string { return filepath.Join(h.Root, "dev", name) }

// freeMajors picks n character majors no driver of this kernel has, in
// the ranges Linux keeps for local use (234-254, then 60-63, 120-127).
func freeMajors(n int) ([]uint32, error) {
	f, err := os.Open("/proc/devices")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	used := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "Block devices:" {
			break
		}
		if fields := strings.Fields(line); len(fields) == 2 {
			if m, err := strconv.Atoi(fields[0]); err == nil {
				used[m] = true
			}
		}
	}
	var out []uint32
	var cands []int
	for m := 234; m <= 254; m++ {
		cands = append(cands, m)
	}
	cands = append(cands, 60, 61, 62, 63, 120, 121, 122, 123, 124, 125, 126, 127)
	for _, m := range cands {
		if !used[m] && len(out) < n {
			out = append(out, uint32(m))
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("gputest: no %d unused character majors in the local ranges", n)
	}
	return out, nil
}

// openScript opens each path given (read and write), once a line comes on
// stdin, and prints what happened: OK or the errno's name (ENXIO, EPERM).
const openScript = `import errno, os, sys
sys.stdin.readline()
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_RDWR | os.O_CLOEXEC))
        print("OK")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
`

// OpenFrom opens each of paths from a host process moved first into the
// cgroups whose cgroup.procs files are given (a sandbox's device cgroup),
// and returns for each path "OK" or the errno's name: "ENXIO" (the
// cgroup allowed the device; no driver has it) or "EPERM" (refused).
func OpenFrom(t testing.TB, procs []string, paths ...string) []string {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", append([]string{"-c", openScript}, paths...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, p := range procs {
		if err := os.WriteFile(p, []byte(pid), 0); err != nil {
			_ = cmd.Process.Kill() // it must not stay in the sandbox's group
			_ = cmd.Wait()
			t.Fatalf("move the helper into %s: %v", p, err)
		}
	}
	_, _ = stdin.Write([]byte("go\n")) // a failure shows in its output
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("open helper: %v: %s", err, out.String())
	}
	got := strings.Fields(out.String())
	if len(got) != len(paths) {
		t.Fatalf("open helper said %q for %d paths", out.String(), len(paths))
	}
	return got
}
