package linux_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// These tests attack a real sandbox from inside and check that nothing of
// the host, or of another sandbox, can be seen or reached.

func TestHostProcessesInvisible(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})

	marker := "424242.4242" // a sleep with an argument nothing else uses
	host := exec.Command("sleep", marker)
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Process.Kill(); host.Wait() })

	res := sh(t, r, id, "ps -eo pid,args; echo; ls /proc | grep -E '^[0-9]+$' | wc -l")
	if strings.Contains(res.Stdout, marker) {
		t.Fatalf("host process visible inside the sandbox:\n%s", res.Stdout)
	}
	if strings.Contains(res.Stdout, strconv.Itoa(os.Getpid())+" ") {
		t.Fatalf("test process pid %d visible:\n%s", os.Getpid(), res.Stdout)
	}
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if !strings.Contains(lines[1], "1 sandpool init") {
		t.Fatalf("PID 1 is not the agent:\n%s", res.Stdout)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(lines[len(lines)-1]))
	if n == 0 || n > 6 {
		t.Fatalf("sandbox sees %d processes, want only its own few:\n%s", n, res.Stdout)
	}
}

func TestHostFilesUnreadable(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})

	secretDir := t.TempDir()
	if err := os.Chmod(secretDir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(secretDir, "secret.txt")
	if err := os.WriteFile(secret, []byte("TOPSECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	climb := strings.Repeat("../", 20) + strings.TrimPrefix(secret, "/")
	for _, user := range []string{"", "root"} {
		script := fmt.Sprintf(`
			cat %[1]s
			ln -sf %[1]s /tmp/abs && cat /tmp/abs
			ln -sf %[2]s /tmp/rel && cat /tmp/rel
			cat /proc/1/root%[1]s
			cat /etc/shadow
			ls /root /home
			ls %[3]s
			echo done`, secret, climb, filepath.Dir(secretDir))
		res := run(t, r, id, proc.Spec{Shell: script, User: user})
		if strings.Contains(res.Stdout+res.Stderr, "TOPSECRET") {
			t.Fatalf("user %q read a host file:\n%s\n%s", user, res.Stdout, res.Stderr)
		}
		if !strings.Contains(res.Stdout, "done") {
			t.Fatalf("script did not run to the end: %+v", res)
		}
		// /home holds only the sandbox's own user.
		if strings.Contains(res.Stdout, "root") && user == "" {
			t.Logf("%s", res.Stdout)
		}
	}
	// The files API resolves symlinks inside the sandbox too.
	for _, p := range []string{secret, "/tmp/abs", "/tmp/rel"} {
		rc, _, err := r.Files(id).Read(context.Background(), p, fsys.Options{})
		if err == nil {
			rc.Close()
			t.Fatalf("files API read %s", p)
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("read %s: got %v, want not found", p, err)
		}
	}
	// The data directory is not visible either.
	res := sh(t, r, id, "ls /proc/self/root; test -e "+secretDir+" && echo VISIBLE; echo ok")
	if strings.Contains(res.Stdout, "VISIBLE") {
		t.Fatalf("host directory visible: %s", res.Stdout)
	}
}

func TestHostListenerUnreachable(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf(`
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", %d))
    print("CONNECTED")
except OSError as e:
    print("refused", e)
try:
    socket.create_connection(("10.0.0.1", 80), timeout=1)
    print("EGRESS")
except OSError as e:
    print("no route", e)
`, port)
	res := run(t, r, id, proc.Spec{Cmd: []string{"python3", "-c", script}})
	if strings.Contains(res.Stdout, "CONNECTED") || strings.Contains(res.Stdout, "EGRESS") {
		t.Fatalf("sandbox reached the network: %s", res.Stdout)
	}
	if !strings.Contains(res.Stdout, "refused") || !strings.Contains(res.Stdout, "no route") {
		t.Fatalf("unexpected output: %+v", res)
	}
	select {
	case <-accepted:
		t.Fatal("host listener accepted a connection from the sandbox")
	case <-time.After(100 * time.Millisecond):
	}
	// Only a loopback interface exists.
	res = sh(t, r, id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
	if strings.TrimSpace(res.Stdout) != "lo" {
		t.Fatalf("interfaces: %q, want only lo", res.Stdout)
	}
	if got := strings.TrimSpace(sh(t, r, id, "hostname").Stdout); got != "sandbox" {
		t.Fatalf("hostname %q", got)
	}
}

func TestForkBombContained(t *testing.T) {
	r := openRuntime(t)
	bomb := createSandbox(t, r, runtime.Spec{Template: "base", Limits: runtime.Limits{Pids: 64, CPUs: 0.5}})
	other := createSandbox(t, r, runtime.Spec{Template: "base"})

	// A counted fork loop first: fork must fail inside, at the limit.
	counted := `
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno)
`
	res := run(t, r, bomb, proc.Spec{Cmd: []string{"python3", "-c", counted}, Timeout: 20 * time.Second})
	f := strings.Fields(res.Stdout)
	if len(f) != 2 || f[1] != "11" { // EAGAIN
		t.Fatalf("fork loop did not hit the pids limit: %+v", res)
	}
	n, _ := strconv.Atoi(f[0])
	if n <= 0 || n >= 64 {
		t.Fatalf("forked %s children with a limit of 64", f[0])
	}
	// Its children sleep on (a finished command's background is its
	// own business) and hold the pids: kill-all frees them.
	if killed, err := r.KillAll(context.Background(), bomb); err != nil || killed < n {
		t.Fatalf("kill-all after the fork loop: %d of its %d children, %v", killed, n, err)
	}

	// Now a real bomb, while the host and another sandbox keep working.
	p, err := r.Exec(context.Background(), bomb, proc.Spec{Shell: "f(){ f | f & }; f; sleep 5", Timeout: 4 * time.Second}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 5 {
		if out := sh(t, r, other, "echo alive").Stdout; out != "alive\n" {
			t.Fatalf("other sandbox: %+v", sh(t, r, other, "echo alive"))
		}
		if err := exec.CommandContext(ctx, "true").Run(); err != nil {
			t.Fatalf("host cannot run processes during the bomb: %v", err)
		}
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	// A sandbox whose every pid is held (here by a process that keeps
	// forking children that sleep) cannot start a new process, and that
	// is said as a limit reached (not a bad request, not a broken
	// sandbox). The shell bomb above may or may not have left it full.
	holder := `
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(600); os._exit(0)
    except OSError:
        time.sleep(0.01)
`
	if _, err := r.Exec(context.Background(), bomb, proc.Spec{Cmd: []string{"python3", "-c", holder}, Background: true}, proc.Stdio{}); err != nil && !errors.Is(err, errdefs.ErrExhausted) {
		t.Fatal(err)
	}
	var full error
	for range 100 {
		if _, full = tryRun(r, bomb, proc.Spec{Cmd: []string{"true"}}, nil); full != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(full, errdefs.ErrExhausted) || errdefs.IsStateError(full) || !strings.Contains(full.Error(), "64") {
		t.Fatalf("exec in a full sandbox: %v, want a limit reached naming the limit (64)", full)
	}
	// Kill-all frees it, and the sandbox works again.
	n, err = r.KillAll(context.Background(), bomb)
	if err != nil || n == 0 {
		t.Fatalf("kill-all: %d %v", n, err)
	}
	if out := sh(t, r, bomb, "echo free").Stdout; out != "free\n" {
		t.Fatalf("after kill-all: %q", out)
	}
	// The bomb sandbox can be destroyed cleanly.
	if err := r.Destroy(context.Background(), bomb); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryBombContained(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base", Limits: runtime.Limits{MemoryBytes: 64 << 20}})
	other := createSandbox(t, r, runtime.Spec{Template: "base"})

	res := run(t, r, id, proc.Spec{Cmd: []string{"python3", "-c", "x = bytearray(400 << 20); x[::4096] = b'1' * len(x[::4096]); print('survived')"}})
	if strings.Contains(res.Stdout, "survived") {
		t.Fatalf("allocated past the memory limit: %+v", res)
	}
	if !res.OOMKilled || res.Signal != "SIGKILL" {
		t.Fatalf("want an OOM kill reported, got %+v", res.ExitStatus)
	}
	// The sandbox lives on, and so does its neighbour.
	if out := sh(t, r, id, "echo still here").Stdout; out != "still here\n" {
		t.Fatalf("sandbox after OOM: %q", out)
	}
	if out := sh(t, r, other, "echo alive").Stdout; out != "alive\n" {
		t.Fatalf("other sandbox: %+v", sh(t, r, other, "echo alive"))
	}
	// A normal exit is not mistaken for an OOM kill.
	if res := sh(t, r, id, "kill -9 $$"); res.OOMKilled {
		t.Fatalf("SIGKILL without OOM reported as OOM: %+v", res)
	}
}

func TestPrivilegedSyscallsRefused(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	script := `
import ctypes, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
def check(name, rc):
    print(name, "ok" if rc == 0 else "refused", ctypes.get_errno())
check("mount", libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
check("unshare-user", libc.unshare(0x10000000))
check("unshare-ns", libc.unshare(0x00020000))
child = subprocess.Popen(["sleep", "30"])
time.sleep(0.1)
check("ptrace-child", libc.ptrace(16, child.pid, 0, 0))
check("ptrace-init", libc.ptrace(16, 1, 0, 0))
child.kill()
check("chroot", libc.chroot(b"/tmp"))
check("sethostname", libc.sethostname(b"evil", 4))
print(open("/proc/self/status").read())
`
	for _, user := range []string{"user", "root"} {
		res := run(t, r, id, proc.Spec{Cmd: []string{"python3", "-c", script}, User: user})
		for _, op := range []string{"mount", "unshare-user", "unshare-ns", "ptrace-child", "ptrace-init", "chroot", "sethostname"} {
			if !strings.Contains(res.Stdout, op+" refused") {
				t.Errorf("as %s: %s was not refused:\n%s%s", user, op, res.Stdout, res.Stderr)
			}
		}
		for _, want := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("as %s: /proc/self/status lacks %q", user, want)
			}
		}
	}
	// The agent survives a sandboxed root trying to kill it.
	res := run(t, r, id, proc.Spec{Shell: "kill -TERM 1; kill -KILL 1; kill -INT 1; echo sent", User: "root"})
	if !strings.Contains(res.Stdout, "sent") {
		t.Fatalf("%+v", res)
	}
	if out := sh(t, r, id, "echo alive").Stdout; out != "alive\n" {
		t.Fatalf("agent did not survive: %q", out)
	}
}

// A process that got out of its namespaces would be an unprivileged nobody
// on the host: sandbox uids map onto an unused host range.
func TestSandboxUIDsAreUnprivilegedOnHost(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	res := sh(t, r, id, "sleep 30 & echo $!")
	inner := strings.TrimSpace(res.Stdout)
	if inner == "" {
		t.Fatal("no pid")
	}
	// Find the sleep on the host by its namespace pid.
	found := false
	for _, pid := range cgroupProcs(t, id) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var nspid, uid string
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				switch f[0] {
				case "NSpid:":
					nspid = f[len(f)-1]
				case "Uid:":
					uid = f[1]
				}
			}
		}
		if nspid == inner {
			found = true
			if uid != "101000" {
				t.Fatalf("sandbox user is host uid %s, want 101000", uid)
			}
		}
	}
	if !found {
		t.Fatalf("did not find sandbox pid %s on the host", inner)
	}
}

func TestSandboxesIsolatedFromEachOther(t *testing.T) {
	r := openRuntime(t)
	a := createSandbox(t, r, runtime.Spec{Template: "base"})
	b := createSandbox(t, r, runtime.Spec{Template: "base"})

	sh(t, r, a, "echo private > /tmp/a-secret; echo private > /home/user/a-secret")
	if _, err := r.Exec(context.Background(), a, proc.Spec{Cmd: []string{"sleep", "313.13"}, Background: true}, proc.Stdio{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(context.Background(), a, proc.Spec{Cmd: []string{"python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"}, Background: true}, proc.Stdio{}); err != nil {
		t.Fatal(err)
	}
	// Wait until A's server answers inside A.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(sh(t, r, a, "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/').status)\" 2>&1").Stdout, "200") {
		if time.Now().After(deadline) {
			t.Fatal("A's server never came up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := sh(t, r, b, `ls /tmp /home/user; ps -eo args; python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2).status)" 2>&1; true`)
	for _, leak := range []string{"a-secret", "313.13", "http.server", "200"} {
		if strings.Contains(res.Stdout, leak) {
			t.Fatalf("sandbox B sees %q of sandbox A:\n%s", leak, res.Stdout)
		}
	}
}

// cgroupProcs lists the host pids in a sandbox's cgroup.
func cgroupProcs(t *testing.T, id string) []int {
	t.Helper()
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/pids", testCgroupParent, id, "cgroup.procs"),
		filepath.Join("/sys/fs/cgroup", testCgroupParent, id, "cgroup.procs"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	t.Fatalf("no cgroup for %s", id)
	return nil
}
