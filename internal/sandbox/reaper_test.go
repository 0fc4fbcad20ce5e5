package sandbox_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// clockRuntime is a runtime that keeps sandboxes as records only: enough
// for the reaper, whose decisions are about time, to run in a synctest
// bubble on a fake clock. (Pauses of real sandboxes are tested in
// pause_test.go; here the question is only when.)
type clockRuntime struct {
	runtime.Runtime // methods the reaper does not use: calling one panics

	mu     sync.Mutex
	status map[string]runtime.Status
	calls  []string
}

func newClockRuntime() *clockRuntime { return &clockRuntime{status: map[string]runtime.Status{}} }

func (r *clockRuntime) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Name: "clock", FreezeKeepsMemory: true}
}
func (r *clockRuntime) Validate(runtime.Spec) error { return nil }

func (r *clockRuntime) Create(_ context.Context, spec runtime.Spec) (runtime.Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status[spec.ID] = runtime.StatusRunning
	return runtime.Info{ID: spec.ID, Status: runtime.StatusRunning}, nil
}

func (r *clockRuntime) set(op, id string, st runtime.Status) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.status[id]; !ok {
		return errdefs.Userf(errdefs.ErrNotFound, "no sandbox %s", id)
	}
	r.calls = append(r.calls, op+" "+id)
	r.status[id] = st
	return nil
}

func (r *clockRuntime) Freeze(_ context.Context, id string) error {
	return r.set("freeze", id, runtime.StatusFrozen)
}
func (r *clockRuntime) Thaw(_ context.Context, id string) error {
	return r.set("thaw", id, runtime.StatusRunning)
}
func (r *clockRuntime) Stop(_ context.Context, id string) error {
	return r.set("stop", id, runtime.StatusStopped)
}

func (r *clockRuntime) Destroy(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "destroy "+id)
	delete(r.status, id)
	return nil
}

func (r *clockRuntime) List(context.Context) ([]runtime.Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []runtime.Info
	for id, st := range r.status {
		out = append(out, runtime.Info{ID: id, Status: st})
	}
	return out, nil
}

func (r *clockRuntime) ops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// bubbleService is a service on a clockRuntime and a real SQLite store,
// made inside the calling synctest bubble.
func bubbleService(t *testing.T, cfg sandbox.Config) (*sandbox.Service, *clockRuntime) {
	t.Helper()
	rt := newClockRuntime()
	cfg.Node = "n1"
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = time.Second
	}
	cfg.ReconcileInterval = time.Hour
	svc := sandbox.New(rt, storetest.SQLite(t), events.NewBroker(), cfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc, rt
}

// The reaper pauses a sandbox once it has been idle longer than its
// timeout, within one reap interval, and not before; every call resets
// the countdown; a paused sandbox keeps the timeout it had.
func TestReaperPausesOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc, rt := bubbleService(t, sandbox.Config{})
		ctx := sandbox.WithoutAutoResume(context.Background())
		sb, err := svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "base", Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		status := func() sandbox.Status {
			synctest.Wait()
			got, err := svc.Get(ctx, "a", sb.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got.Status
		}
		time.Sleep(4 * time.Second)
		if _, err := svc.Ping(ctx, "a", sb.ID); err != nil { // activity at 4 s
			t.Fatal(err)
		}
		time.Sleep(4900 * time.Millisecond) // 8.9 s: idle 4.9 s
		if st := status(); st != sandbox.StatusRunning {
			t.Fatalf("%s after 4.9 s idle with a 5 s timeout", st)
		}
		time.Sleep(1100 * time.Millisecond) // 10 s: idle 6 s, a reap round since 9 s
		if st := status(); st != sandbox.StatusPaused {
			t.Fatalf("%s after 6 s idle with a 5 s timeout and 1 s reap rounds", st)
		}
		if ops := rt.ops(); len(ops) != 1 || ops[0] != "freeze "+sb.ID {
			t.Fatalf("runtime calls %v, want one freeze", ops)
		}
		got, _ := svc.Get(ctx, "a", sb.ID)
		if got.TimeoutLeft == nil || *got.TimeoutLeft != 5 {
			t.Fatalf("timeout kept for the resume: %v", got.TimeoutLeft)
		}
	})
}

// Pings count as activity: a sandbox pinged more often than its timeout
// is never paused. (With auto-resume off, a ping to a sandbox the reaper
// paused fails, so the test fails if pings stop counting.)
func TestPingsCountAsActivity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc, rt := bubbleService(t, sandbox.Config{})
		ctx := sandbox.WithoutAutoResume(context.Background())
		sb, err := svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "base", Timeout: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			time.Sleep(2 * time.Second)
			synctest.Wait()
			if _, err := svc.Ping(ctx, "a", sb.ID); err != nil {
				t.Fatalf("ping after %d s: %v", 2*(i+1), err)
			}
		}
		if ops := rt.ops(); len(ops) != 0 {
			t.Fatalf("a pinged sandbox was touched by the reaper: %v", ops)
		}
	})
}

// on_timeout kill destroys the sandbox instead.
func TestReaperKillsOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		svc, rt := bubbleService(t, sandbox.Config{})
		ctx := context.Background()
		sb, err := svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "base", Timeout: 2, OnTimeout: "kill"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		got, err := svc.Get(ctx, "a", sb.ID)
		if err != nil || got.Status != sandbox.StatusStopped {
			t.Fatalf("after 3.5 s idle with kill at 2 s: %+v %v", got.Status, err)
		}
		if ops := rt.ops(); len(ops) != 1 || ops[0] != "destroy "+sb.ID {
			t.Fatalf("runtime calls %v, want one destroy", ops)
		}
	})
}
