// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

// Run runs every behaviour against stores made by newStore (a fresh, empty
// store per call).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Sandboxes", func(t *testing.T) { testSandboxes(t, newStore(t)) })
	t.Run("StatusCompareAndSet", func(t *testing.T) { testStatusCAS(t, newStore(t)) })
	t.Run("Keys", func(t *testing.T) { testKeys(t, newStore(t)) })
	t.Run("Idempotency", func(t *testing.T) { testIdempotency(t, newStore(t)) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrent(t, newStore(t)) })
	t.Run("Pools", func(t *testing.T) { testPools(t, newStore(t)) })
	t.Run("TakeIdle", func(t *testing.T) { testTakeIdle(t, newStore(t)) })
	t.Run("TakeIdleConcurrent", func(t *testing.T) { testTakeIdleConcurrent(t, newStore(t)) })
	t.Run("Templates", func(t *testing.T) { testTemplates(t, newStore(t)) })
	t.Run("UpdateAndTouch", func(t *testing.T) { testUpdate(t, newStore(t)) })
	t.Run("Nodes", func(t *testing.T) { testNodes(t, newStore(t)) })
	t.Run("NodeName", func(t *testing.T) { testNodeName(t, newStore(t)) })
	t.Run("Leases", func(t *testing.T) { testLeases(t, newStore(t)) })
	t.Run("LeaseContention", func(t *testing.T) { testLeaseContention(t, newStore(t)) })
}

func testSandboxes(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := store.Sandbox{ID: "sb_a", Tenant: "t1", Template: "base", Status: "running", Spec: `{"x":1}`,
		Metadata: map[string]string{"team": "ml"}, Node: "n1", CreatedAt: time.Unix(100, 0)}
	b := store.Sandbox{ID: "sb_b", Tenant: "t2", Template: "base", Status: "creating", Spec: "{}", Node: "n1", CreatedAt: time.Unix(200, 0)}
	for _, sb := range []store.Sandbox{a, b} {
		if err := s.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSandbox(ctx, a); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := s.GetSandbox(ctx, "sb_a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got, cmpopts.IgnoreFields(store.Sandbox{}, "UpdatedAt"), cmpopts.EquateApproxTime(time.Microsecond)); diff != "" {
		t.Fatalf("get (-want +got):\n%s", diff)
	}
	if _, err := s.GetSandbox(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	list, err := s.ListSandboxes(ctx, store.Filter{Tenant: "t1"})
	if err != nil || len(list) != 1 || list[0].ID != "sb_a" {
		t.Fatalf("list by tenant: %+v %v", list, err)
	}
	if n, err := s.CountSandboxes(ctx, store.Filter{Node: "n1", Statuses: []string{"running", "creating"}}); err != nil || n != 2 {
		t.Fatalf("count: %d %v", n, err)
	}
	if by, err := s.CountByStatus(ctx, store.Filter{Node: "n1"}); err != nil || by["running"] != 1 || by["creating"] != 1 || len(by) != 2 {
		t.Fatalf("count by status: %v %v", by, err)
	}
	list, _ = s.ListSandboxes(ctx, store.Filter{Statuses: []string{"creating", "stopped"}})
	if len(list) != 1 || list[0].ID != "sb_b" {
		t.Fatalf("list by status: %+v", list)
	}
	list, _ = s.ListSandboxes(ctx, store.Filter{})
	if len(list) != 2 || list[0].ID != "sb_a" {
		t.Fatalf("list all, oldest first: %+v", list)
	}
	if err := s.DeleteSandbox(ctx, "sb_a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSandbox(ctx, "sb_a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testStatusCAS(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb", Tenant: "t", Template: "base", Status: "creating", Spec: "{}"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStatus(ctx, "sb", []string{"running"}, "stopping", ""); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("wrong from: %v", err)
	}
	if err := s.SetStatus(ctx, "sb", []string{"creating"}, "failed", "boom"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetSandbox(ctx, "sb")
	if got.Status != "failed" || got.Error != "boom" {
		t.Fatalf("after set: %+v", got)
	}
	if err := s.SetStatus(ctx, "nope", nil, "x", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	// Many racers, one winner.
	if err := s.SetStatus(ctx, "sb", nil, "running", ""); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.SetStatus(ctx, "sb", []string{"running"}, "stopping", "")
			if err == nil {
				wins.Add(1)
			} else if !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("racer: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d racers won the transition, want 1", wins.Load())
	}
}

func testKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	k := store.Key{ID: "key_1", Tenant: "t", Hash: "h1", Admin: true, CreatedAt: time.Unix(5, 0)}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, store.Key{ID: "key_2", Tenant: "t", Hash: "h1"}); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("duplicate hash: %v", err)
	}
	got, err := s.KeyByHash(ctx, "h1")
	if err != nil || got.ID != "key_1" || !got.Admin || got.Tenant != "t" {
		t.Fatalf("by hash: %+v %v", got, err)
	}
	if err := s.RevokeKey(ctx, "key_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeyByHash(ctx, "h1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("revoked key still found: %v", err)
	}
	if err := s.RevokeKey(ctx, "key_1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	keys, _ := s.ListKeys(ctx)
	if len(keys) != 1 || keys[0].RevokedAt.IsZero() {
		t.Fatalf("list: %+v", keys)
	}
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := context.Background()
	idem := store.Idempotency{Tenant: "t", Key: "k", BodyHash: "h", SandboxID: "sb1", ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := s.PutIdempotency(ctx, idem); err != nil {
		t.Fatal(err)
	}
	again := idem
	again.SandboxID = "sb2"
	got, err := s.PutIdempotency(ctx, again)
	if !errors.Is(err, errdefs.ErrExists) || got.SandboxID != "sb1" || got.BodyHash != "h" {
		t.Fatalf("second put: %+v %v", got, err)
	}
	// Another tenant may use the same key.
	other := idem
	other.Tenant = "t2"
	if _, err := s.PutIdempotency(ctx, other); err != nil {
		t.Fatal(err)
	}
	// An expired record is replaced.
	old := store.Idempotency{Tenant: "t", Key: "old", BodyHash: "h", SandboxID: "sb3", ExpiresAt: time.Now().Add(-time.Second)}
	if _, err := s.PutIdempotency(ctx, old); err != nil {
		t.Fatal(err)
	}
	fresh := old
	fresh.SandboxID = "sb4"
	fresh.ExpiresAt = time.Now().Add(time.Hour)
	if got, err := s.PutIdempotency(ctx, fresh); err != nil || got.SandboxID != "sb4" {
		t.Fatalf("after expiry: %+v %v", got, err)
	}
	// Pointed at another sandbox, then forgotten.
	if err := s.SetIdempotency(ctx, "t9", "k9", "sb_other"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIdempotency(ctx, store.Idempotency{Tenant: "t9", Key: "k9", BodyHash: "h", SandboxID: "sb_9", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIdempotency(ctx, "t9", "k9", "sb_other"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PutIdempotency(ctx, store.Idempotency{Tenant: "t9", Key: "k9", BodyHash: "h", SandboxID: "sb_x", ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, errdefs.ErrExists) || got.SandboxID != "sb_other" {
		t.Fatalf("after set: %+v %v", got, err)
	}
	if err := s.DeleteIdempotency(ctx, "t9", "k9"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PutIdempotency(ctx, store.Idempotency{Tenant: "t9", Key: "k9", BodyHash: "h", SandboxID: "sb_new", ExpiresAt: time.Now().Add(time.Hour)}); err != nil || got.SandboxID != "sb_new" {
		t.Fatalf("after delete: %+v %v", got, err)
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				id := fmt.Sprintf("sb_%d_%d", g, i)
				if err := s.CreateSandbox(ctx, store.Sandbox{ID: id, Tenant: "t", Template: "base", Status: "creating", Spec: "{}"}); err != nil {
					t.Errorf("create: %v", err)
					return
				}
				if err := s.SetStatus(ctx, id, []string{"creating"}, "running", ""); err != nil {
					t.Errorf("set: %v", err)
				}
				if _, err := s.ListSandboxes(ctx, store.Filter{Tenant: "t"}); err != nil {
					t.Errorf("list: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	list, _ := s.ListSandboxes(ctx, store.Filter{Statuses: []string{"running"}})
	if len(list) != 200 {
		t.Fatalf("%d running, want 200", len(list))
	}
}
