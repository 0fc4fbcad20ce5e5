package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

func fastLoops() sandbox.Config {
	return sandbox.Config{ReapInterval: 100 * time.Millisecond, ReconcileInterval: 100 * time.Millisecond}
}

func (e *env) status(t *testing.T, id string) sandbox.Sandbox {
	t.Helper()
	sb, err := e.svc.Get(context.Background(), "a", id)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func (e *env) rtStatus(t *testing.T, id string) runtime.Status {
	t.Helper()
	in, err := e.rt.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return in.Status
}

// A sandbox with a 2 s timeout is paused once idle (when exactly is
// TestReaperPausesOnTime's, on a fake clock), frozen with its processes,
// and resumes with its files and processes.
func TestTimeoutPausesAndResumeKeepsEverything(t *testing.T) {
	e := newEnv(t, fastLoops())
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 2})
	if sb.OnTimeout != "pause" || sb.TimesOutAt == nil {
		t.Fatalf("created: %+v", sb)
	}
	e.run(t, "a", sb.ID, "echo kept > /tmp/file")
	p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Shell: "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; mv /tmp/c /tmp/counter; sleep 0.1; done", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	procID := p.ID()
	p.Close()
	eventually(t, 30*time.Second, "paused", func() bool { return e.status(t, sb.ID).Status == sandbox.StatusPaused })
	got := e.status(t, sb.ID)
	if got.PausedAt == nil || got.Archived || got.TimeoutLeft == nil || *got.TimeoutLeft != 2 {
		t.Fatalf("paused: %+v", got)
	}
	// The store says paused before the freeze is done (written first).
	eventually(t, 30*time.Second, "frozen", func() bool { return e.rtStatus(t, sb.ID) == runtime.StatusFrozen })
	res, info, err := e.svc.Resume(ctx, "a", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != sandbox.StatusRunning || info.From != "frozen" || !info.ProcessesKept {
		t.Fatalf("resumed: %+v %+v", res, info)
	}
	// The background process was frozen, not killed: it goes on counting
	// (it replaces the file whole: a read never sees it half-written).
	first, _ := e.run(t, "a", sb.ID, "cat /tmp/file /tmp/counter")
	if !strings.HasPrefix(first, "kept\n") || len(first) == len("kept\n") {
		t.Fatalf("after resume: %q", first)
	}
	eventually(t, 30*time.Second, "the counter goes on after the resume", func() bool {
		second, _ := e.run(t, "a", sb.ID, "cat /tmp/counter")
		return second != "" && second != strings.TrimPrefix(first, "kept\n")
	})
	ps, err := e.svc.Processes(ctx, "a", sb.ID)
	if err != nil || len(ps) != 1 || ps[0].ID != procID || !ps[0].Running {
		t.Fatalf("processes after resume: %+v %v", ps, err)
	}
}

// Pings to a real sandbox keep it running. Auto-resume is off, so a ping
// that found it paused would fail (and not quietly resume it).
func TestPingKeepsItRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastLoops())
	ctx := sandbox.WithoutAutoResume(context.Background())
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 2})
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		got, err := e.svc.Ping(ctx, "a", sb.ID)
		if err != nil || got.Status != sandbox.StatusRunning {
			t.Fatalf("ping: %+v %v", got, err)
		}
	}
}

// A command running longer than the timeout is activity: not interrupted.
func TestLongCommandIsNotInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastLoops())
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 2})
	out, st := e.run(t, "a", sb.ID, "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1; done; echo done")
	if out != "done\n" || st.Code != 0 {
		t.Fatalf("10 s command: %q %+v", out, st)
	}
	if got := e.status(t, sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("after the command: %s", got.Status)
	}
	eventually(t, 30*time.Second, "paused once idle", func() bool { return e.status(t, sb.ID).Status == sandbox.StatusPaused })
}

func TestKillOnTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastLoops())
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 1, OnTimeout: "kill"})
	eventually(t, 30*time.Second, "killed", func() bool { return e.status(t, sb.ID).Status == sandbox.StatusStopped })
	if left := linuxtest.Leftovers(e.rt.DataDir(), []string{sb.ID}); len(left) > 0 {
		t.Fatalf("left: %v", left)
	}
}

// An archived sandbox resumes on its files, without its processes; the
// timeout it had left when paused is the timeout it has after resuming.
func TestArchiveAndTimeoutLeft(t *testing.T) {
	e := newEnv(t, fastLoops())
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 10})
	e.run(t, "a", sb.ID, "mkdir -p /home/user/work && head -c 1048576 /dev/urandom > /home/user/work/data && md5sum /home/user/work/data > /home/user/sum; setsid sleep 1000 > /dev/null 2>&1 &")
	time.Sleep(3 * time.Second) // 7 s left
	paused, err := e.svc.Pause(ctx, "a", sb.ID, sandbox.PauseOptions{Archive: true})
	if err != nil {
		t.Fatal(err)
	}
	if !paused.Archived || paused.TimeoutLeft == nil || *paused.TimeoutLeft < 6.5 || *paused.TimeoutLeft > 7.5 {
		t.Fatalf("paused: %+v left %v", paused, paused.TimeoutLeft)
	}
	if st := e.rtStatus(t, sb.ID); st != runtime.StatusStopped {
		t.Fatalf("archived sandbox's runtime status %s", st)
	}
	time.Sleep(2 * time.Second) // paused time does not count
	res, info, err := e.svc.Resume(ctx, "a", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.From != "archive" || info.ProcessesKept {
		t.Fatalf("resume info %+v", info)
	}
	if left := time.Until(*res.TimesOutAt); left < 6*time.Second || left > 7500*time.Millisecond {
		t.Fatalf("timeout left after resume %v, want about 7 s", left)
	}
	out, _ := e.run(t, "a", sb.ID, "md5sum -c /home/user/sum; pgrep -c sleep")
	if out != "/home/user/work/data: OK\n0\n" {
		t.Fatalf("after resume from archive: %q", out)
	}
}

// Calls to a paused sandbox resume it first, unless the caller says not to.
func TestCallsResumeAPausedSandbox(t *testing.T) {
	e := newEnv(t, fastLoops())
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{})
	if _, err := e.svc.Pause(ctx, "a", sb.ID, sandbox.PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Exec(sandbox.WithoutAutoResume(ctx), "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"true"}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("exec without auto-resume: %v", err)
	}
	if out, _ := e.run(t, "a", sb.ID, "echo awake"); out != "awake\n" {
		t.Fatalf("exec on a paused sandbox: %q", out)
	}
	if got := e.status(t, sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("after exec: %s", got.Status)
	}
	// Many calls at once on a paused sandbox: one resume, every call works.
	if _, err := e.svc.Pause(ctx, "a", sb.ID, sandbox.PauseOptions{Archive: true}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var out bytes.Buffer
			p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"echo", "ok"}}, proc.Stdio{Stdout: &out})
			if err == nil {
				_, err = p.Wait()
			}
			if err == nil && out.String() != "ok\n" {
				err = errors.New("output " + out.String())
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestArchiveAfter(t *testing.T) {
	t.Parallel()
	cfg := fastLoops()
	cfg.ArchiveAfter = time.Second
	e := newEnv(t, cfg)
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 1})
	eventually(t, 30*time.Second, "archived", func() bool {
		got := e.status(t, sb.ID)
		return got.Status == sandbox.StatusPaused && got.Archived
	})
	if st := e.rtStatus(t, sb.ID); st != runtime.StatusStopped {
		t.Fatalf("runtime status %s", st)
	}
}

func TestSetTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastLoops())
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{})
	if sb.TimesOutAt != nil {
		t.Fatal("no timeout, yet times_out_at")
	}
	one, kill := 1, "kill"
	got, err := e.svc.SetTimeout(ctx, "a", sb.ID, sandbox.TimeoutRequest{Timeout: &one, OnTimeout: &kill})
	if err != nil || got.Timeout != 1 || got.OnTimeout != "kill" || got.TimesOutAt == nil {
		t.Fatalf("set: %+v %v", got, err)
	}
	bad := "sleep"
	if _, err := e.svc.SetTimeout(ctx, "a", sb.ID, sandbox.TimeoutRequest{OnTimeout: &bad}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad on_timeout: %v", err)
	}
	eventually(t, 30*time.Second, "killed", func() bool { return e.status(t, sb.ID).Status == sandbox.StatusStopped })
}

// The reconciler makes the store and the runtime agree.
func TestReconciler(t *testing.T) {
	e := newEnv(t, fastLoops())
	ctx := context.Background()

	// Processes lost (PID 1 killed), files there: an archived pause.
	lost := e.create(t, "a", sandbox.CreateRequest{})
	e.run(t, "a", lost.ID, "echo still > /home/user/note")
	if err := syscall.Kill(linuxtest.InitPID(t, e.rt, lost.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "marked paused and archived", func() bool {
		got := e.status(t, lost.ID)
		return got.Status == sandbox.StatusPaused && got.Archived
	})
	if out, _ := e.run(t, "a", lost.ID, "cat /home/user/note"); out != "still\n" {
		t.Fatalf("after resume: %q", out)
	}

	// Gone from the runtime: stopped.
	gone := e.create(t, "a", sandbox.CreateRequest{})
	if err := e.rt.Destroy(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "marked stopped", func() bool { return e.status(t, gone.ID).Status == sandbox.StatusStopped })

	// The store says paused, the runtime runs it (a pause cut short): frozen.
	half := e.create(t, "a", sandbox.CreateRequest{})
	paused := "paused"
	now := time.Now()
	if err := e.st.UpdateSandbox(ctx, half.ID, nil, store.Update{Status: &paused, PausedAt: &now}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "frozen", func() bool { return e.rtStatus(t, half.ID) == runtime.StatusFrozen })

	// Unknown to the store: destroyed (the reconciler may even catch it
	// while it is being made, and the create is then cancelled).
	strayID := ids.Sandbox()
	if _, err := e.rt.Create(ctx, runtime.Spec{ID: strayID, Template: "base"}); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "unknown sandbox destroyed", func() bool {
		_, err := e.rt.Get(ctx, strayID)
		return errors.Is(err, errdefs.ErrNotFound)
	})
	if left := linuxtest.Leftovers(e.rt.DataDir(), []string{strayID}); len(left) > 0 {
		t.Fatalf("left of the unknown sandbox: %v", left)
	}
}

// A stream open across a pause and resume neither breaks the timeout nor
// counts twice: once it ends and the sandbox is idle, the timeout applies.
func TestStreamAcrossPause(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastLoops())
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{Timeout: 1})
	p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Shell: "sleep 1.5"}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	paused, err := e.svc.Pause(ctx, "a", sb.ID, sandbox.PauseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if paused.TimeoutLeft == nil || *paused.TimeoutLeft != 1 {
		t.Fatalf("paused with a stream open: timeout left %v, want the whole 1 s", paused.TimeoutLeft)
	}
	if _, _, err := e.svc.Resume(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "paused once idle", func() bool { return e.status(t, sb.ID).Status == sandbox.StatusPaused })
}
