package leader_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sandpool/sandpool/internal/leader"
	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func openStore(t *testing.T) *sqlstore.DB { return storetest.SQLite(t) }

// Several contenders: at most one works at a time, and when it stops (its
// context ends), another takes over within two lease periods (on the
// bubble's fake clock: exact, not a guess about a busy machine).
func TestOneLeaderAtATime(t *testing.T) {
	synctest.Test(t, testOneLeaderAtATime)
}

func testOneLeaderAtATime(t *testing.T) {
	st := openStore(t)
	const ttl = 300 * time.Millisecond
	var working, maxWorking, terms atomic.Int64
	var holder atomic.Value
	var wg sync.WaitGroup
	cancels := make([]context.CancelFunc, 3)
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		name := string(rune('a' + i))
		wg.Go(func() {
			leader.Run(ctx, st, "pool/p", name, leader.Options{TTL: ttl},
				func(ctx context.Context, fence store.Fence) {
					n := working.Add(1)
					if n > maxWorking.Load() {
						maxWorking.Store(n)
					}
					terms.Add(1)
					holder.Store(name)
					<-ctx.Done()
					working.Add(-1)
				})
		})
	}
	synctest.Wait()
	if holder.Load() == nil {
		t.Fatal("nobody leads")
	}
	// Stop the holder's node: another takes over within two lease periods.
	first := holder.Load().(string)
	stoppedAt := time.Now()
	cancels[first[0]-'a']()
	for holder.Load().(string) == first {
		if time.Since(stoppedAt) > 2*ttl {
			t.Fatalf("no takeover within two lease periods (%v)", 2*ttl)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range cancels {
		c()
	}
	wg.Wait()
	if maxWorking.Load() != 1 {
		t.Fatalf("%d leaders at once", maxWorking.Load())
	}
	if terms.Load() < 2 {
		t.Fatalf("%d terms", terms.Load())
	}
}

// failing is a store whose renewals start failing.
type failing struct {
	leader.Leases
	fail atomic.Bool
}

func (f *failing) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if f.fail.Load() {
		return store.Lease{}, errors.New("injected: database unreachable")
	}
	return f.Leases.AcquireLease(ctx, name, holder, ttl)
}

// A holder that cannot renew stops working before its lease's deadline.
func TestStopsBeforeTheDeadline(t *testing.T) {
	synctest.Test(t, testStopsBeforeTheDeadline)
}

func testStopsBeforeTheDeadline(t *testing.T) {
	f := &failing{Leases: openStore(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ttl = 10 * time.Second
	stopped := make(chan time.Time, 1)
	var expires time.Time
	go leader.Run(ctx, f, "pool/p", "a", leader.Options{TTL: ttl}, func(ctx context.Context, fence store.Fence) {
		l, _ := f.Leases.AcquireLease(context.Background(), "pool/p", "a", ttl) // renew once, and learn the deadline
		expires = l.ExpiresAt
		f.fail.Store(true)
		<-ctx.Done()
		stopped <- time.Now()
	})
	select {
	case at := <-stopped:
		if !at.Before(expires) {
			t.Fatalf("stopped at %v, after the lease's deadline %v", at, expires)
		}
	case <-time.After(time.Minute):
		t.Fatal("work not stopped although the lease could not be renewed")
	}
}

// A leader renews its lease every third of the TTL and keeps working as
// long as renewals succeed.
func TestRenewsWhileWorking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		const ttl = 9 * time.Second
		start := time.Now()
		var stopped time.Time
		done := make(chan struct{})
		go func() {
			defer close(done)
			leader.Run(ctx, st, "pool/p", "a", leader.Options{TTL: ttl}, func(ctx context.Context, fence store.Fence) {
				<-ctx.Done()
				stopped = time.Now()
			})
		}()
		for range 10 {
			time.Sleep(ttl / 3)
			synctest.Wait()
			l, err := st.AcquireLease(context.Background(), "pool/p", "b", ttl) // someone else asks
			if err != nil {
				t.Fatal(err)
			}
			if l.Holder != "a" || !l.ExpiresAt.After(time.Now().Add(ttl/2)) {
				t.Fatalf("after %v the lease is %+v: not renewed", time.Since(start), l)
			}
		}
		if !stopped.IsZero() {
			t.Fatal("work stopped although renewals succeed")
		}
		cancel()
		<-done
	})
}
