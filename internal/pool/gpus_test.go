package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/gpu"
	"github.com/sandpool/sandpool/internal/gpu/gputest"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// newGPUEnv is newEnv on a stand-in host of n GPUs.
func newGPUEnv(t *testing.T, n int) *env {
	t.Helper()
	h := gputest.New(t, n)
	host, err := gpu.Discover(context.Background(), gpu.Options{Root: h.Root})
	if err != nil {
		t.Fatal(err)
	}
	rt := linuxtest.Open(t)
	st := storetest.SQLite(t)
	ev := events.NewBroker()
	svc := sandbox.New(rt, st, ev, sandbox.Config{Node: "n1", GPUHost: host})
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

// TestGPUPoolDirectCreate: with direct_create, an acquire when no GPU is
// free answers gpus_exhausted (409), not pool_empty; a released sandbox
// keeps its GPU for the next session.
func TestGPUPoolDirectCreate(t *testing.T) {
	e := newGPUEnv(t, 1)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "g", Template: "base", Limits: sandbox.Limits{GPUs: 1},
		AcquirePolicy: pool.DirectCreate}); err != nil {
		t.Fatal(err)
	}
	a, err := e.m.Acquire(ctx, "t", "g", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.sh(t, a.ID, "ls /dev | grep '^nvidia[0-9]'"); got != "nvidia0\n" {
		t.Fatalf("acquired sandbox sees %q", got)
	}
	if _, err := e.m.Acquire(ctx, "t", "g", 0); !errors.Is(err, sandbox.ErrGPUsExhausted) || errdefs.CodeOf(err) != "gpus_exhausted" {
		t.Fatalf("a second acquire with no GPU free: %v", err)
	}
	if _, err := e.m.Release(ctx, "t", a.ID, pool.SessionOK); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "g", 1)
	b, err := e.m.Acquire(ctx, "t", "g", 0)
	if err != nil || b.ID != a.ID {
		t.Fatalf("after the release: %+v, %v (want %s again)", b, err, a.ID)
	}
	// More GPUs than the node has: refused when the pool is made.
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "big", Template: "base", Limits: sandbox.Limits{GPUs: 2}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a pool of 2-GPU sandboxes on a 1-GPU node: %v", err)
	}
}

// TestGPUPoolWait: a wait pool that cannot fill (another sandbox holds
// the only GPU) stays active, not degraded, and its waiting acquire is
// served once the GPU is given back.
func TestGPUPoolWait(t *testing.T) {
	e := newGPUEnv(t, 1)
	ctx := context.Background()
	holder, err := e.svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base", Limits: sandbox.Limits{GPUs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "w", Template: "base", Limits: sandbox.Limits{GPUs: 1},
		MinIdle: 1, AcquirePolicy: pool.Wait, AcquireTimeout: 60}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		sb  sandbox.Sandbox
		err error
	}
	done := make(chan result, 1)
	go func() {
		sb, err := e.m.Acquire(ctx, "t", "w", 0)
		done <- result{sb, err}
	}()
	// Several replenish rounds find no GPU free meanwhile.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case r := <-done:
			t.Fatalf("acquire returned while the GPU was held: %+v, %v", r.sb, r.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if in, err := e.m.Get(ctx, "t", "w"); err != nil || in.Status != pool.StatusActive {
		t.Fatalf("pool while no GPU is free: %+v, %v", in, err)
	}
	if err := e.svc.Delete(ctx, "t", holder.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := e.sh(t, r.sb.ID, "ls /dev | grep '^nvidia[0-9]'"); got != "nvidia0\n" {
			t.Fatalf("acquired sandbox sees %q", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiting acquire was not served once the GPU was free")
	}
}
