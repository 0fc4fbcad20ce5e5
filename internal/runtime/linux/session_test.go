package linux_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

func reset(t *testing.T, r runtime.Runtime, id string) bool {
	t.Helper()
	restarted, err := r.Reset(context.Background(), id)
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	return restarted
}

// A session that only ran processes is reset in place; one that wrote
// files is reset by a fresh boot. Either way the next session sees none
// of it.
func TestResetLeavesNothing(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	fresh := sh(t, r, id, "ls -A /tmp /home/user /dev/shm /dev/mqueue; pgrep -c sleep || true").Stdout

	// Processes only (and memory filesystems): in place.
	p, err := r.Exec(ctx, id, proc.Spec{Shell: "sleep 1000", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	sh(t, r, id, "setsid sleep 1000 >/dev/null 2>&1 & echo x > /dev/shm/session1; python3 -c 'import os; os.mkfifo(\"/dev/shm/fifo\")'")
	if restarted := reset(t, r, id); restarted {
		t.Fatal("a session without file changes needed a restart")
	}
	if got := sh(t, r, id, "ls -A /tmp /home/user /dev/shm /dev/mqueue; pgrep -c sleep || true").Stdout; got != fresh {
		t.Fatalf("after an in-place reset:\n%s\nwant:\n%s", got, fresh)
	}
	if ps, _ := r.Processes(ctx, id); len(ps) != 0 {
		t.Fatalf("process table after reset: %+v", ps)
	}

	// Files in several places, a daemon, environment in a profile.
	sh(t, r, id, "echo secret > /tmp/a; echo secret > /home/user/b; mkdir -p /home/user/.cache/x; echo 'export FOO=bar' >> /home/user/.profile; nohup sleep 1000 >/dev/null 2>&1 &")
	run(t, r, id, proc.Spec{User: "root", Shell: "echo secret > /etc/motd; rm /etc/hostname; chmod 777 /opt"})
	if restarted := reset(t, r, id); !restarted {
		t.Fatal("a session that wrote files was reset in place")
	}
	got := sh(t, r, id, "ls -A /tmp /home/user /dev/shm /dev/mqueue; pgrep -c sleep || true").Stdout
	if got != fresh {
		t.Fatalf("after reset:\n%s\nwant:\n%s", got, fresh)
	}
	res := sh(t, r, id, "cat /etc/motd 2>&1; test -e /etc/hostname && echo hostname-ok; stat -c %a /opt; if [ -f /home/user/.profile ]; then . /home/user/.profile; fi; echo FOO=$FOO")
	if strings.Contains(res.Stdout, "secret") || !strings.Contains(res.Stdout, "hostname-ok") || !strings.Contains(res.Stdout, "\n755\n") || !strings.Contains(res.Stdout, "FOO=\n") {
		t.Fatalf("after reset: %q", res.Stdout)
	}
}

// System V IPC objects outlive their processes: only a restart (a fresh
// IPC namespace) clears them.
func TestResetClearsIPC(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	sh(t, r, id, "ipcmk -M 4096 >/dev/null && ipcmk -Q >/dev/null")
	if got := sh(t, r, id, "ipcs -m | grep -c 0x").Stdout; got != "1\n" {
		t.Fatalf("no shared memory made: %q", got)
	}
	if restarted := reset(t, r, id); !restarted {
		t.Fatal("IPC objects left, yet reset in place")
	}
	if got := sh(t, r, id, "ipcs -m -q | grep -c 0x").Stdout; got != "0\n" {
		t.Fatalf("IPC objects after reset: %q", got)
	}
}

// Seal makes the current files the state a reset returns to.
func TestSeal(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()
	run(t, r, id, proc.Spec{User: "root", Shell: "mkdir -p /opt/tool && echo v1 > /opt/tool/version && rm /etc/motd"})
	if err := r.Seal(ctx, id); err != nil {
		t.Fatal(err)
	}
	sh(t, r, id, "echo junk > /tmp/junk")
	run(t, r, id, proc.Spec{User: "root", Shell: "echo v2 > /opt/tool/version"})
	if !reset(t, r, id) {
		t.Fatal("files changed, yet reset in place")
	}
	if got := sh(t, r, id, "cat /opt/tool/version; test -e /etc/motd && echo motd; ls /tmp").Stdout; got != "v1\n" {
		t.Fatalf("after seal and reset: %q", got)
	}
	if reset(t, r, id) {
		t.Fatal("nothing changed since the last reset, yet restarted")
	}
	// A second seal stacks.
	run(t, r, id, proc.Spec{User: "root", Shell: "echo more > /opt/tool/more"})
	if err := r.Seal(ctx, id); err != nil {
		t.Fatal(err)
	}
	reset(t, r, id)
	if got := sh(t, r, id, "cat /opt/tool/version /opt/tool/more").Stdout; got != "v1\nmore\n" {
		t.Fatalf("after two seals: %q", got)
	}
}

// What sandbox root may change in /dev also makes a reset start over.
func TestResetNoticesDevChanges(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	for _, change := range []string{"rm /dev/ptmx", "chmod 700 /dev/shm", "rm /dev/stdin && ln -s /proc/self/fd/5 /dev/stdin"} {
		run(t, r, id, proc.Spec{User: "root", Shell: change})
		if !reset(t, r, id) {
			t.Fatalf("%q: reset in place", change)
		}
		if got := sh(t, r, id, "test -e /dev/ptmx && stat -c %a /dev/shm && readlink /dev/stdin").Stdout; got != "1777\n/proc/self/fd/0\n" {
			t.Fatalf("after %q and a reset: %q", change, got)
		}
	}
}
