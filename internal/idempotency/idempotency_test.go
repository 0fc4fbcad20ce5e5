package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestRecords(t *testing.T) {
	ctx := context.Background()
	r := idempotency.New(storetest.SQLite(t))
	first, err := r.Begin(ctx, "t", "k1", []byte(`{"template":"base"}`), "sb_1")
	if err != nil || first.SandboxID != "sb_1" || first.Replay != "" {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := r.Begin(ctx, "t", "k1", []byte(`{"template":"base"}`), "sb_2")
	if err != nil || again.Replay != "sb_1" || again.SandboxID != "" {
		t.Fatalf("replay: %+v %v", again, err)
	}
	if _, err := r.Begin(ctx, "t", "k1", []byte(`{"template":"other"}`), "sb_3"); !errors.Is(err, idempotency.ErrMismatch) || !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("another body: %v", err)
	}
	// Keys are per tenant.
	if other, err := r.Begin(ctx, "u", "k1", []byte(`{"template":"base"}`), "sb_4"); err != nil || other.SandboxID != "sb_4" {
		t.Fatalf("another tenant: %+v %v", other, err)
	}
	// A pool's create points the key at the sandbox it acquired.
	first.Repoint(ctx, "sb_pool")
	if c, _ := r.Begin(ctx, "t", "k1", []byte(`{"template":"base"}`), "sb_5"); c.Replay != "sb_pool" {
		t.Fatalf("after repoint: %+v", c)
	}
	// A create that made nothing is forgotten: the next one makes anew.
	first.Forget(ctx)
	if c, _ := r.Begin(ctx, "t", "k1", []byte(`{"template":"base"}`), "sb_6"); c.SandboxID != "sb_6" {
		t.Fatalf("after forget: %+v", c)
	}
	if _, err := r.Begin(ctx, "t", strings.Repeat("k", 256), nil, "sb_7"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("long key: %v", err)
	}
}

// Concurrent creates with one key: exactly one gets to make the sandbox,
// every other is told to replay it.
func TestRecordsConcurrent(t *testing.T) {
	ctx := context.Background()
	r := idempotency.New(storetest.SQLite(t))
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		makers []string
		seen   = map[string]int{}
	)
	for i := range 16 {
		wg.Go(func() {
			c, err := r.Begin(ctx, "t", "same", []byte("body"), fmt.Sprintf("sb_%d", i))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				seen["error: "+err.Error()]++
			case c.Replay != "":
				seen[c.Replay]++
			default:
				makers = append(makers, c.SandboxID)
			}
		})
	}
	wg.Wait()
	if len(makers) != 1 {
		t.Fatalf("%d creates got to make the sandbox: %v", len(makers), makers)
	}
	if seen[makers[0]] != 15 || len(seen) != 1 {
		t.Fatalf("replays %v, want 15 of %s", seen, makers[0])
	}
}
