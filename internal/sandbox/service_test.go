package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/ids"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestMain(m *testing.M) { linuxtest.MainNet(m) }

type env struct {
	rt  *linux.Runtime
	st  *sqlstore.DB
	svc *sandbox.Service
}

func newEnv(t *testing.T, cfg sandbox.Config) *env {
	t.Helper()
	rt := linuxtest.Open(t)
	st := storetest.SQLite(t)
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	svc := sandbox.New(rt, st, events.NewBroker(), cfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &env{rt: rt, st: st, svc: svc}
}

func (e *env) create(t *testing.T, tenant string, req sandbox.CreateRequest) sandbox.Sandbox {
	t.Helper()
	if req.Template == "" {
		req.Template = "base"
	}
	sb, err := e.svc.Create(context.Background(), tenant, "", req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return sb
}

func (e *env) run(t *testing.T, tenant, id, shell string) (string, proc.ExitStatus) {
	t.Helper()
	var out bytes.Buffer
	p, err := e.svc.Exec(context.Background(), tenant, id, sandbox.ExecRequest{Shell: shell}, proc.Stdio{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q: %v", shell, err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("exec %q: %v", shell, err)
	}
	return out.String(), st
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within %v: %s", d, what)
}

func TestCreateExecDelete(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	sub := e.svc.Events().Subscribe(64, nil)
	defer sub.Close()

	sb := e.create(t, "a", sandbox.CreateRequest{Env: map[string]string{"GREETING": "hi"}, Metadata: map[string]string{"job": "7"}})
	if sb.Status != sandbox.StatusRunning || sb.Template != "base" || sb.CreatedAt.IsZero() || sb.Limits.MemoryBytes == 0 {
		t.Fatalf("created: %+v", sb)
	}
	// The sandbox's env reaches its processes; the caller's env wins.
	if out, st := e.run(t, "a", sb.ID, "echo $GREETING"); out != "hi\n" || st.Code != 0 {
		t.Fatalf("env: %q %+v", out, st)
	}
	p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Shell: "echo $GREETING", Env: map[string]string{"GREETING": "yo"}}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()

	list, err := e.svc.List(ctx, "a", sandbox.ListOptions{Metadata: map[string]string{"job": "7"}})
	if err != nil || len(list) != 1 || list[0].ID != sb.ID {
		t.Fatalf("list by metadata: %+v %v", list, err)
	}
	if list, _ := e.svc.List(ctx, "a", sandbox.ListOptions{Metadata: map[string]string{"job": "8"}}); len(list) != 0 {
		t.Fatalf("list by other metadata: %+v", list)
	}

	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	got, err := e.svc.Get(ctx, "a", sb.ID)
	if err != nil || got.Status != sandbox.StatusStopped {
		t.Fatalf("after delete: %+v %v", got, err)
	}
	if _, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"true"}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("exec in stopped sandbox: %v", err)
	}
	if left := linuxtest.Leftovers(e.rt.DataDir(), []string{sb.ID}); len(left) > 0 {
		t.Fatalf("left after delete: %v", left)
	}
	// Every transition was published, in order.
	var seq []string
	for len(seq) < 4 {
		select {
		case ev := <-sub.C:
			if ev.Sandbox == sb.ID {
				seq = append(seq, ev.Status)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("events so far: %v", seq)
		}
	}
	if want := "creating running stopping stopped"; strings.Join(seq, " ") != want {
		t.Fatalf("events %v, want %s", seq, want)
	}
}

func TestTenantsAreSeparate(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{})
	for name, err := range map[string]error{
		"get": func() error { _, err := e.svc.Get(ctx, "b", sb.ID); return err }(),
		"exec": func() error {
			_, err := e.svc.Exec(ctx, "b", sb.ID, sandbox.ExecRequest{Cmd: []string{"true"}}, proc.Stdio{})
			return err
		}(),
		"files":  func() error { _, err := e.svc.Files(ctx, "b", sb.ID); return err }(),
		"delete": e.svc.Delete(ctx, "b", sb.ID),
	} {
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s by another tenant: %v, want not found", name, err)
		}
	}
	if list, _ := e.svc.List(ctx, "b", sandbox.ListOptions{}); len(list) != 0 {
		t.Errorf("tenant b lists %d sandboxes", len(list))
	}
	if got, err := e.svc.Get(ctx, "a", sb.ID); err != nil || got.Status != sandbox.StatusRunning {
		t.Fatalf("a's sandbox after b's attempts: %+v %v", got, err)
	}
}

func TestBadCreateChangesNothing(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	for _, req := range []sandbox.CreateRequest{
		{},
		{Template: "nope"},
		{Template: "base", Limits: runtime.Limits{MemoryBytes: -1}},
		{Template: "base", Limits: runtime.Limits{CPUs: -2}},
		{Template: "base", Timeout: -1},
		{Template: "base", Metadata: map[string]string{"": "x"}},
	} {
		_, err := e.svc.Create(ctx, "a", "", req)
		if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("create %+v: %v, want a user error", req, err)
		}
		var ue *errdefs.UserError
		if !errors.As(err, &ue) {
			t.Errorf("create %+v: %T is not a user error", req, err)
		}
	}
	rows, err := e.st.ListSandboxes(ctx, store.Filter{})
	if err != nil || len(rows) != 0 {
		t.Fatalf("rows after bad creates: %d %v", len(rows), err)
	}
	if infos, _ := e.rt.List(ctx); len(infos) != 0 {
		t.Fatalf("runtime sandboxes after bad creates: %d", len(infos))
	}
}

func TestCapacityUnderConcurrency(t *testing.T) {
	const max, callers = 3, 10
	e := newEnv(t, sandbox.Config{MaxSandboxes: max})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, full int
	for range callers {
		wg.Go(func() {
			_, err := e.svc.Create(context.Background(), "a", "", sandbox.CreateRequest{Template: "base"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, sandbox.ErrCapacity):
				full++
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != max || full != callers-max {
		t.Fatalf("%d created, %d refused; want %d and %d", ok, full, max, callers-max)
	}
}

// A sandbox whose init dies is broken: the next call gets a state error,
// and the sandbox is taken out of service keeping its files (paused and
// archived, with the cause); a resume starts it again. A user error leaves
// the sandbox running.
func TestBrokenSandboxIsRetired(t *testing.T) {
	e := newEnv(t, sandbox.Config{ReconcileInterval: time.Hour}) // the call, not the reconciler, finds it
	ctx := context.Background()
	sb := e.create(t, "a", sandbox.CreateRequest{})
	other := e.create(t, "a", sandbox.CreateRequest{})
	e.run(t, "a", sb.ID, "echo kept > /home/user/work")

	// A user error leaves the sandbox running.
	if _, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"/no/such/program"}}, proc.Stdio{}); err == nil || errdefs.IsStateError(err) {
		t.Fatalf("exec of a missing program: %v, want a user error", err)
	}
	if got, _ := e.svc.Get(ctx, "a", sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("after a user error: %s", got.Status)
	}

	pid := linuxtest.InitPID(t, e.rt, sb.ID)
	if pid == 0 {
		t.Fatal("no init process found")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "call fails with a state error", func() bool {
		_, err := e.svc.Exec(sandbox.WithoutAutoResume(ctx), "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"true"}}, proc.Stdio{})
		return errdefs.IsStateError(err) || errors.Is(err, errdefs.ErrConflict)
	})
	eventually(t, 30*time.Second, "sandbox retired", func() bool {
		got, _ := e.svc.Get(ctx, "a", sb.ID)
		return got.Status == sandbox.StatusPaused && got.Archived && strings.Contains(got.Error, "broke")
	})
	if out, _ := e.run(t, "a", sb.ID, "cat /home/user/work"); out != "kept\n" {
		t.Fatalf("after a resume: %q", out)
	}
	// The other sandbox is untouched.
	if out, _ := e.run(t, "a", other.ID, "echo alive"); out != "alive\n" {
		t.Fatalf("other sandbox: %q", out)
	}
}

// Start finishes what a crash left: rows stuck creating fail, running rows
// whose sandbox is gone stop, and sandboxes the store does not know are
// destroyed. Sandboxes that are fine keep running.
func TestStartRecovers(t *testing.T) {
	rt := linuxtest.Open(t)
	ctx := context.Background()
	st := storetest.SQLite(t)
	now := time.Now().UTC()
	add := func(id, status string) {
		if err := st.CreateSandbox(ctx, store.Sandbox{ID: id, Tenant: "a", Template: "base", Status: status, Spec: "{}", Node: "n1", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	// A healthy sandbox the store knows.
	kept, err := rt.Create(ctx, runtime.Spec{ID: ids.Sandbox(), Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	add(kept.ID, "running")
	// A sandbox the store never heard of (crash after create, before the
	// row was written is impossible; a row lost with a database restore is
	// not).
	stray, err := rt.Create(ctx, runtime.Spec{ID: ids.Sandbox(), Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	add("sb_creating", "creating")
	add("sb_gone", "running")

	svc := sandbox.New(rt, st, events.NewBroker(), sandbox.Config{Node: "n1"})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for id, want := range map[string]sandbox.Status{kept.ID: sandbox.StatusRunning, "sb_creating": sandbox.StatusFailed, "sb_gone": sandbox.StatusStopped} {
		got, err := svc.Get(ctx, "a", id)
		if err != nil || got.Status != want {
			t.Errorf("%s: %s %v, want %s", id, got.Status, err, want)
		}
	}
	if left := linuxtest.Leftovers(rt.DataDir(), []string{stray.ID}); len(left) > 0 {
		t.Errorf("unknown sandbox not destroyed: %v", left)
	}
	var out bytes.Buffer
	p, err := svc.Exec(ctx, "a", kept.ID, sandbox.ExecRequest{Cmd: []string{"echo", "still here"}}, proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil || out.String() != "still here\n" {
		t.Fatalf("kept sandbox: %q %v", out.String(), err)
	}
}

// Many goroutines create, use and delete sandboxes, and delete each other's
// at the same time. Every sandbox ends stopped, none is left on the host.
func TestConcurrentLifecycle(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	const workers, each = 8, 4
	ids := make(chan string, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				sb, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "base"})
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				ids <- sb.ID
				var out bytes.Buffer
				p, err := e.svc.Exec(ctx, "a", sb.ID, sandbox.ExecRequest{Cmd: []string{"echo", fmt.Sprint(w, i)}}, proc.Stdio{Stdout: &out})
				if err != nil {
					t.Errorf("exec: %v", err)
					continue
				}
				if _, err := p.Wait(); err != nil || out.String() != fmt.Sprintln(w, i) {
					t.Errorf("exec output %q %v", out.String(), err)
				}
				// Two deletes race; both succeed, one does the work.
				var dw sync.WaitGroup
				for range 2 {
					dw.Go(func() {
						if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
							t.Errorf("delete: %v", err)
						}
					})
				}
				dw.Wait()
			}
		})
	}
	wg.Wait()
	close(ids)
	var all []string
	for id := range ids {
		all = append(all, id)
		got, err := e.svc.Get(ctx, "a", id)
		if err != nil || got.Status != sandbox.StatusStopped {
			t.Errorf("%s: %s %v", id, got.Status, err)
		}
	}
	if left := linuxtest.Leftovers(e.rt.DataDir(), all); len(left) > 0 {
		t.Fatalf("left on the host: %v", left)
	}
}
