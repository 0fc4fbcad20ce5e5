package pool_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// flakySandboxes stands in for the lifecycle service where creates must
// fail on command (a template whose setup breaks, a full disk): the
// replenish loop's timing is the question, on a synctest fake clock.
type flakySandboxes struct {
	pool.Sandboxes // what the loop does not use: calling it panics

	mu       sync.Mutex
	fail     bool
	attempts []time.Time
	idle     int
}

func (f *flakySandboxes) CheckTemplate(context.Context, string, sandbox.Limits) error { return nil }

func (f *flakySandboxes) CheckNetwork(context.Context, string, *sandbox.Network) error { return nil }

func (f *flakySandboxes) CreateForPool(_ context.Context, p sandbox.PoolSandbox) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, time.Now())
	if f.fail {
		return sandbox.Sandbox{}, errors.New("template setup failed: no network")
	}
	f.idle++
	return sandbox.Sandbox{ID: "sb_x", Pool: p.Pool, Status: sandbox.StatusReady}, nil
}

func (f *flakySandboxes) PoolCounts(context.Context, string) (sandbox.PoolCounts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sandbox.PoolCounts{Idle: f.idle}, nil
}

func (f *flakySandboxes) Idle(context.Context, string, string) ([]sandbox.Sandbox, error) {
	return nil, nil
}

func (f *flakySandboxes) Resetting(context.Context) ([]sandbox.Sandbox, error) { return nil, nil }

func (f *flakySandboxes) times() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.attempts...)
}

// Creates that keep failing: three in a row mark the pool degraded, then
// the loop waits 1 s, 2 s, 4 s ... up to 64 s between attempts (not at every
// tick); one success makes it active again.
func TestReplenishBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sbs := &flakySandboxes{fail: true}
		m := pool.NewManager(sbs, storetest.SQLite(t), events.NewBroker(), pool.Options{Node: "n1", Tick: 250 * time.Millisecond,
			MaxParallelCreates: 1, Log: discard()})
		ctx := context.Background()
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if _, err := m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		in, err := m.Get(ctx, "t", "p")
		if err != nil || in.Status != pool.StatusDegraded || in.LastError == "" {
			t.Fatalf("after failing creates: %+v %v", in, err)
		}
		at := sbs.times()
		if len(at) < 10 {
			t.Fatalf("%d attempts in 5 minutes", len(at))
		}
		var gaps []time.Duration
		for i := 1; i < len(at); i++ {
			gaps = append(gaps, at[i].Sub(at[i-1]))
		}
		// The first three come a tick apart; then each wait doubles from
		// 1 s (the next tick after it ends) and stops at 64 s.
		want := time.Second
		for i, g := range gaps {
			if i < 2 {
				if g > 250*time.Millisecond {
					t.Fatalf("gap %d (before degraded) %v, want a tick: %v", i, g, gaps)
				}
				continue
			}
			if g < want || g > want+250*time.Millisecond {
				t.Fatalf("gap %d is %v, want %v (+ at most a tick): %v", i, g, want, gaps)
			}
			want = min(want*2, 64*time.Second)
		}
		// Creates work again: the pool fills and is active.
		sbs.mu.Lock()
		sbs.fail = false
		sbs.mu.Unlock()
		time.Sleep(65 * time.Second)
		synctest.Wait()
		in, err = m.Get(ctx, "t", "p")
		if err != nil || in.Status != pool.StatusActive || in.Idle != 1 || in.LastError != "" {
			t.Fatalf("after creates succeed: %+v %v", in, err)
		}
		if err := m.Delete(ctx, "t", "p"); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatal(err)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
