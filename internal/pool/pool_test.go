package pool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestMain(m *testing.M) { linuxtest.MainNet(m) }

type env struct {
	rt  *linux.Runtime
	st  store.Store
	svc *sandbox.Service
	m   *pool.Manager
	reg *prometheus.Registry
}

// newEnv runs a service and a pool manager on a real runtime and SQLite;
// wrap, if set, wraps the store (to inject faults).
func newEnvB(b *testing.B) *env { return newEnv(b, nil) }

func newEnv(t testing.TB, wrap func(store.Store) store.Store) *env {
	t.Helper()
	return newEnvWith(t, wrap, linux.Config{}, sandbox.Config{})
}

// newEnvWith is newEnv with settings for the runtime and the service.
func newEnvWith(t testing.TB, wrap func(store.Store) store.Store, rcfg linux.Config, scfg sandbox.Config) *env {
	t.Helper()
	rt := linuxtest.OpenWith(t, rcfg)
	db := storetest.SQLite(t)
	var st store.Store = db
	if wrap != nil {
		st = wrap(db)
	}
	ev := events.NewBroker()
	scfg.Node = "n1"
	svc := sandbox.New(rt, st, ev, scfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := pool.NewManager(svc, st, ev, pool.Options{Node: "n1", Tick: 20 * time.Millisecond, DrainTimeout: 10 * time.Second, Registry: reg})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); svc.Close() })
	return &env{rt: rt, st: st, svc: svc, m: m, reg: reg}
}

func (e *env) waitIdle(t *testing.T, name string, n int) pool.Info {
	t.Helper()
	var in pool.Info
	var err error
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		in, err = e.m.Get(context.Background(), "t", name)
		if err == nil && in.Idle == n && in.Creating == 0 && in.Resetting == 0 {
			return in
		}
		if time.Now().After(end) {
			rows, _ := e.st.ListSandboxes(context.Background(), store.Filter{Pool: name})
			var states []string
			for _, r := range rows {
				states = append(states, r.ID+" "+r.Status+" "+r.Error)
			}
			t.Fatalf("not within 30s: %d idle in %s: %+v %v; sandboxes: %q", n, name, in, err, states)
		}
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within %v: %s", d, what)
}

func (e *env) sh(t *testing.T, id, line string) string {
	t.Helper()
	out, err := e.trySh(id, line)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// trySh runs a shell line and returns its output; for goroutines, which
// must not call t.Fatal.
func (e *env) trySh(id, line string) (string, error) {
	var out strings.Builder
	p, err := e.svc.Exec(context.Background(), "t", id, sandbox.ExecRequest{Shell: line}, proc.Stdio{Stdout: &out, Stderr: &out})
	if err != nil {
		return "", fmt.Errorf("exec %q: %w", line, err)
	}
	if _, err := p.Wait(); err != nil {
		return "", fmt.Errorf("exec %q: %w", line, err)
	}
	return out.String(), nil
}

func TestAcquireRelease(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 2, MaxIdle: 2}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "p", 2)
	sb, err := e.m.Acquire(ctx, "t", "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Status != sandbox.StatusRunning || sb.Pool != "p" || sb.Uses != 1 {
		t.Fatalf("acquired %+v", sb)
	}
	if out := e.sh(t, sb.ID, "echo hi"); out != "hi\n" {
		t.Fatalf("exec in acquired sandbox: %q", out)
	}
	// Another tenant sees neither the pool nor can release.
	if _, err := e.m.Acquire(ctx, "other", "p", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("other tenant's acquire: %v", err)
	}
	if _, err := e.m.Release(ctx, "other", sb.ID, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("other tenant's release: %v", err)
	}
	// The pool refills to min_idle while the sandbox is in use.
	e.waitIdle(t, "p", 2)
	if _, err := e.m.Release(ctx, "t", sb.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Release(ctx, "t", sb.ID, ""); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second release: %v", err)
	}
	// Above max_idle: the released one was destroyed rather than kept.
	in := e.waitIdle(t, "p", 2)
	if in.InUse != 0 {
		t.Fatalf("after release: %+v", in)
	}
	eventually(t, 30*time.Second, "released sandbox over max_idle destroyed", func() bool {
		got, _ := e.svc.Get(ctx, "t", sb.ID)
		return got.Status == sandbox.StatusStopped
	})
	// Counted once the destroy has returned (just after the status says
	// stopped).
	destroyed := metric(t, e, "sandpool_pool_sandboxes_destroyed_total", "p", "idle")
	eventually(t, 30*time.Second, "destroyed{idle} = 1", func() bool { return testutil.ToFloat64(destroyed) >= 1 })
	if n := testutil.ToFloat64(destroyed); n != 1 {
		t.Fatalf("destroyed{idle} = %g", n)
	}
}

// metric finds a pool metric by name and label values.
func metric(t *testing.T, e *env, name string, labels ...string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				match := true
				for i, l := range m.GetLabel() {
					if i >= len(labels) || l.GetValue() != labels[i] {
						match = false
					}
				}
				if match {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
		return 0
	})
}

type collectorFunc func() float64

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc("x", "x", nil, nil)
}

func (f collectorFunc) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("x", "x", nil, nil), prometheus.GaugeValue, f())
}

// A session leaves nothing for the next one: files in several places, a
// background process, environment.
func TestSessionsStartFresh(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 1, MaxIdle: 1}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "p", 1)
	sb, err := e.m.Acquire(ctx, "t", "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	e.sh(t, sb.ID, "echo s1 > /tmp/f; echo s1 > /home/user/f; echo s1 > /dev/shm/f; echo 'export SESSION=1' >> /home/user/.profile; nohup sleep 1000 >/dev/null 2>&1 &")
	p, err := e.svc.Exec(ctx, "t", sb.ID, sandbox.ExecRequest{Shell: "sleep 1000", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	// Keep max_idle room for it: the pool has min 1, max 1 and refills
	// while this one is out, so lower min_idle first.
	zero := 0
	two := 2
	if _, err := e.m.Update(ctx, "t", "p", pool.Update{MinIdle: &zero, MaxIdle: &two}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Release(ctx, "t", sb.ID, ""); err != nil {
		t.Fatal(err)
	}
	// Take sandboxes until this one comes back.
	var again sandbox.Sandbox
	var got sandbox.Sandbox
	for end := time.Now().Add(30 * time.Second); got.Status != sandbox.StatusReady; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the released sandbox is not idle again within 30s: %s %q", got.Status, got.Error)
		}
		got, _ = e.svc.Get(ctx, "t", sb.ID)
	}
	for {
		again, err = e.m.Acquire(ctx, "t", "p", 0)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID == sb.ID {
			break
		}
	}
	if again.Uses != 2 {
		t.Fatalf("uses %d", again.Uses)
	}
	out := e.sh(t, sb.ID, "cat /tmp/f /home/user/f /dev/shm/f 2>&1 | grep -c s1; pgrep -c sleep; if [ -f /home/user/.profile ]; then . /home/user/.profile; fi; echo SESSION=$SESSION")
	if out != "0\n0\nSESSION=\n" {
		t.Fatalf("session 2 sees session 1: %q", out)
	}
	if ps, _ := e.svc.Processes(ctx, "t", sb.ID); len(ps) != 0 {
		t.Fatalf("processes in session 2: %+v", ps)
	}
}

// Regression (seed 000, first review bug): a stale first idle sandbox,
// then a healthy one, means acquire succeeds without creating.
func TestStaleIdleIsSkipped(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 2, MaxIdle: 2, AcquirePolicy: pool.FailFast}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "p", 2)
	idle, err := e.st.ListSandboxes(ctx, store.Filter{Pool: "p", Statuses: []string{"ready"}})
	if err != nil || len(idle) != 2 {
		t.Fatalf("idle: %+v %v", idle, err)
	}
	// The longest idle is taken first: break that one.
	stale := idle[0]
	if idle[1].UpdatedAt.Before(stale.UpdatedAt) {
		stale = idle[1]
	}
	if err := syscall.Kill(linuxtest.InitPID(t, e.rt, stale.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Stop the pool from refilling, so a create would show.
	zero := 0
	if _, err := e.m.Update(ctx, "t", "p", pool.Update{MinIdle: &zero}); err != nil {
		t.Fatal(err)
	}
	sb, err := e.m.Acquire(ctx, "t", "p", 0)
	if err != nil {
		t.Fatalf("acquire with a stale first idle: %v", err)
	}
	if sb.ID == stale.ID {
		t.Fatal("handed out the stale sandbox")
	}
	if n := testutil.ToFloat64(metric(t, e, "sandpool_pool_acquires_total", "reused", "p")); n != 1 {
		t.Fatalf("acquires{reused} = %g", n)
	}
	if n := testutil.ToFloat64(metric(t, e, "sandpool_pool_acquires_total", "created", "p")); n != 0 {
		t.Fatalf("acquires{created} = %g", n)
	}
	eventually(t, 30*time.Second, "stale sandbox destroyed", func() bool {
		got, _ := e.svc.Get(ctx, "t", stale.ID)
		return got.Status == sandbox.StatusStopped && len(linuxtest.Leftovers(e.rt.DataDir(), []string{stale.ID})) == 0
	})
	// Now empty: fail_fast says so.
	if _, err := e.m.Acquire(ctx, "t", "p", 0); !errors.Is(err, pool.ErrEmpty) {
		t.Fatalf("acquire from an empty pool: %v", err)
	}
}

// failingStore fails the status write that would make a new sandbox ready.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

func (f *failingStore) SetStatus(ctx context.Context, id string, from []string, status, errMsg string) error {
	if f.fail.Load() && status == string(sandbox.StatusReady) {
		return errors.New("injected: database unavailable")
	}
	return f.Store.SetStatus(ctx, id, from, status, errMsg)
}

func (f *failingStore) UpdateSandbox(ctx context.Context, id string, from []string, u store.Update) error {
	if f.fail.Load() && u.Status != nil && *u.Status == string(sandbox.StatusReady) {
		return errors.New("injected: database unavailable")
	}
	return f.Store.UpdateSandbox(ctx, id, from, u)
}

// Regression (seed 000, second review bug): a sandbox created but not
// recorded in the store is destroyed at once; the pool goes degraded and
// reports why, then recovers.
func TestStoreFailureAfterCreateLeaksNothing(t *testing.T) {
	var fs *failingStore
	e := newEnv(t, func(s store.Store) store.Store { fs = &failingStore{Store: s}; return fs })
	fs.fail.Store(true)
	ctx := context.Background()
	sub := e.svc.Events().Subscribe(1024, func(ev events.Event) bool { return ev.Type == "pool" })
	defer sub.Close()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 2}); err != nil {
		t.Fatal(err)
	}
	var in pool.Info
	eventually(t, 30*time.Second, "pool degraded", func() bool {
		in, _ = e.m.Get(ctx, "t", "p")
		return in.Status == pool.StatusDegraded
	})
	if !strings.Contains(in.LastError, "injected") {
		t.Fatalf("last error %q", in.LastError)
	}
	// Every sandbox made so far is gone from the host.
	rows, _ := e.st.ListSandboxes(ctx, store.Filter{Pool: "p", Statuses: []string{"creating", "ready", "running", "stopping", "stopped", "failed"}})
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.ID)
	}
	if len(ids) < 3 {
		t.Fatalf("only %d creates tried", len(ids))
	}
	infos, _ := e.rt.List(ctx)
	if len(infos) != 0 {
		t.Fatalf("%d sandboxes left in the runtime", len(infos))
	}
	if left := linuxtest.Leftovers(e.rt.DataDir(), ids); len(left) > 0 {
		t.Fatalf("left on the host: %v", left)
	}
	fs.fail.Store(false)
	eventually(t, 30*time.Second, "pool active again with 2 idle", func() bool {
		in, _ = e.m.Get(ctx, "t", "p")
		return in.Status == pool.StatusActive && in.Idle == 2 && in.LastError == ""
	})
	var seen []string
	for len(sub.C) > 0 {
		ev := <-sub.C
		seen = append(seen, ev.Status)
	}
	if got := strings.Join(seen, " "); !strings.Contains(got, "degraded") || !strings.HasSuffix(got, "active") {
		t.Fatalf("pool events: %s", got)
	}
}

// Many acquirers and releasers: no sandbox is ever held by two callers at
// once, the pool stays within max_total, and after a drain nothing is left.
func TestConcurrentAcquireRelease(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	cfg := pool.Config{Name: "p", Template: "base", MinIdle: 3, MaxIdle: 5, MaxTotal: 8, MaxUses: 4,
		AcquirePolicy: pool.Wait, AcquireTimeout: 20}
	if _, err := e.m.Create(ctx, "t", cfg); err != nil {
		t.Fatal(err)
	}
	var held sync.Map
	var maxTotal, maxIdle atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			in, err := e.m.Get(ctx, "t", "p")
			if err != nil {
				continue
			}
			total := int64(in.Idle + in.InUse + in.Creating + in.Resetting)
			if total > maxTotal.Load() {
				maxTotal.Store(total)
			}
			if int64(in.Idle) > maxIdle.Load() {
				maxIdle.Store(int64(in.Idle))
			}
		}
	})
	const workers, rounds = 12, 8
	var acquired atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				sb, err := e.m.Acquire(ctx, "t", "p", 0)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				acquired.Add(1)
				if _, dup := held.LoadOrStore(sb.ID, w); dup {
					t.Errorf("sandbox %s handed to two callers", sb.ID)
				}
				if i%3 == 0 {
					if _, err := e.trySh(sb.ID, fmt.Sprintf("echo %d-%d > /tmp/mine", w, i)); err != nil {
						t.Error(err)
					}
				}
				held.Delete(sb.ID)
				outcome := ""
				if i == 5 {
					outcome = pool.SessionFatal
				}
				if _, err := e.m.Release(ctx, "t", sb.ID, outcome); err != nil {
					t.Errorf("release: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	if acquired.Load() != workers*rounds {
		t.Fatalf("%d acquires, want %d", acquired.Load(), workers*rounds)
	}
	if maxTotal.Load() > int64(cfg.MaxTotal) {
		t.Fatalf("pool reached %d sandboxes, max_total %d", maxTotal.Load(), cfg.MaxTotal)
	}
	if maxIdle.Load() > int64(cfg.MaxIdle) {
		t.Fatalf("pool reached %d idle, max_idle %d", maxIdle.Load(), cfg.MaxIdle)
	}
	// No sandbox served more than max_uses sessions.
	rows, _ := e.st.ListSandboxes(ctx, store.Filter{Pool: "p", Statuses: []string{"creating", "ready", "running", "resetting", "stopping", "stopped", "failed"}})
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.ID)
		if r.Uses > cfg.MaxUses {
			t.Errorf("%s served %d sessions, max_uses %d", r.ID, r.Uses, cfg.MaxUses)
		}
	}
	// Drain: nothing of the pool is left.
	if err := e.m.Delete(ctx, "t", "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Get(ctx, "t", "p"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("pool after delete: %v", err)
	}
	rows, _ = e.st.ListSandboxes(ctx, store.Filter{Pool: "p"})
	for _, r := range rows {
		if r.Status != "stopped" && r.Status != "failed" {
			t.Errorf("after drain %s is %s", r.ID, r.Status)
		}
	}
	if infos, _ := e.rt.List(ctx); len(infos) != 0 {
		t.Fatalf("%d sandboxes left in the runtime after drain", len(infos))
	}
	if left := linuxtest.Leftovers(e.rt.DataDir(), ids); len(left) > 0 {
		t.Fatalf("left on the host: %v", left)
	}
}

// An acquired sandbox whose caller goes quiet past the session timeout is
// destroyed, and the pool makes another.
func TestSessionTimeout(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 1, MaxIdle: 1, SessionTimeout: 1}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "p", 1)
	sb, err := e.m.Acquire(ctx, "t", "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Timeout != 1 || sb.OnTimeout != "kill" {
		t.Fatalf("acquired: %+v", sb)
	}
	eventually(t, 30*time.Second, "abandoned sandbox destroyed", func() bool {
		got, _ := e.svc.Get(ctx, "t", sb.ID)
		return got.Status == sandbox.StatusStopped
	})
	e.waitIdle(t, "p", 1)
}

// slowReadyStore stalls after each write that makes a created sandbox
// idle, as a loaded machine may between that write and the create's
// return.
type slowReadyStore struct {
	store.Store
	stall atomic.Bool
}

func (s *slowReadyStore) UpdateSandbox(ctx context.Context, id string, from []string, u store.Update) error {
	err := s.Store.UpdateSandbox(ctx, id, from, u)
	if err == nil && s.stall.Load() && u.Status != nil && *u.Status == string(sandbox.StatusReady) &&
		slices.Equal(from, []string{string(sandbox.StatusCreating)}) {
		time.Sleep(time.Second)
	}
	return err
}

// A sandbox being created is counted once, as a claim of the pool's
// until the write that makes it idle and as idle after: a release in
// between finds room under max_idle (it was counted twice, and the
// released sandbox destroyed as one too many).
func TestNewIdleCountedOnce(t *testing.T) {
	var ss *slowReadyStore
	e := newEnv(t, func(s store.Store) store.Store { ss = &slowReadyStore{Store: s}; return ss })
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 1, MaxIdle: 2}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "p", 1)
	ss.stall.Store(true)
	sb, err := e.m.Acquire(ctx, "t", "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The pool makes another; once it is idle in the store (its create
	// not returned yet), release the first.
	eventually(t, 30*time.Second, "the new sandbox is idle", func() bool {
		idle, _ := e.st.ListSandboxes(ctx, store.Filter{Pool: "p", Statuses: []string{"ready"}})
		return len(idle) == 1
	})
	if _, err := e.m.Release(ctx, "t", sb.ID, ""); err != nil {
		t.Fatal(err)
	}
	var got sandbox.Sandbox
	for end := time.Now().Add(30 * time.Second); got.Status != sandbox.StatusReady; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the released sandbox is not idle again: %s %q", got.Status, got.Error)
		}
		got, _ = e.svc.Get(ctx, "t", sb.ID)
	}
	ss.stall.Store(false)
	e.waitIdle(t, "p", 2)
}
