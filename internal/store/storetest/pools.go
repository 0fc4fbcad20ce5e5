package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

func testPools(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := store.Pool{Name: "py", Tenant: "t1", Config: `{"min_idle":2}`, Status: "active"}
	if err := s.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePool(ctx, p); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("duplicate pool: %v", err)
	}
	got, err := s.GetPool(ctx, "py")
	if err != nil || got.Tenant != "t1" || got.Config != p.Config || got.Status != "active" || got.CreatedAt.IsZero() {
		t.Fatalf("get: %+v %v", got, err)
	}
	if err := s.UpdatePool(ctx, "py", `{"min_idle":5}`, "draining"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetPool(ctx, "py"); got.Config != `{"min_idle":5}` || got.Status != "draining" {
		t.Fatalf("after update: %+v", got)
	}
	if err := s.UpdatePool(ctx, "py", `{"min_idle":9}`, "active"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("update of a draining pool: %v", err)
	}
	if err := s.UpdatePool(ctx, "nope", "{}", "active"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if err := s.CreatePool(ctx, store.Pool{Name: "go", Tenant: "t2", Config: "{}", Status: "active"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListPools(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "go" || list[1].Name != "py" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.DeletePool(ctx, "py"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPool(ctx, "py"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := s.DeletePool(ctx, "py"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func addPooled(t *testing.T, s store.Store, id, pool, node, status string) {
	t.Helper()
	if err := s.CreateSandbox(context.Background(), store.Sandbox{ID: id, Tenant: "t1", Template: "base", Status: status,
		Spec: "{}", Node: node, Pool: pool}); err != nil {
		t.Fatal(err)
	}
}

func testTakeIdle(t *testing.T, s store.Store) {
	ctx := context.Background()
	addPooled(t, s, "sb_1", "p", "n1", "ready")
	time.Sleep(time.Millisecond) // distinct idle times
	addPooled(t, s, "sb_2", "p", "n2", "ready")
	addPooled(t, s, "sb_3", "p", "n1", "running")
	addPooled(t, s, "sb_4", "other", "n1", "ready")

	// The longest idle first; a use is counted; the session timeout set.
	got, err := take(ctx, s, "p", "", 90)
	if err != nil || got.ID != "sb_1" || got.Status != "running" || got.Uses != 1 || got.Pool != "p" ||
		got.Timeout != 90 || got.OnTimeout != "kill" {
		t.Fatalf("take: %+v %v", got, err)
	}
	// On a node.
	if _, err := take(ctx, s, "p", "n1", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("take on n1: %v", err)
	}
	if got, err := take(ctx, s, "p", "n2", 0); err != nil || got.ID != "sb_2" {
		t.Fatalf("take on n2: %+v %v", got, err)
	}
	if _, err := take(ctx, s, "p", "", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("take from an empty pool: %v", err)
	}
	counts, err := s.CountByStatus(ctx, store.Filter{Pool: "p", Statuses: []string{"creating", "ready", "running", "resetting", "paused", "stopping"}})
	if err != nil || counts["running"] != 3 || counts["ready"] != 0 {
		t.Fatalf("counts: %v %v", counts, err)
	}
	// Released and taken again: uses go on counting.
	if err := s.SetStatus(ctx, "sb_1", []string{"running"}, "ready", ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := take(ctx, s, "p", "", 0); got.ID != "sb_1" || got.Uses != 2 {
		t.Fatalf("second take: %+v", got)
	}
	list, _ := s.ListSandboxes(ctx, store.Filter{Pool: "other"})
	if len(list) != 1 || list[0].ID != "sb_4" || list[0].Status != "ready" {
		t.Fatalf("other pool: %+v", list)
	}
}

// Many takers, few idle sandboxes: each is handed out exactly once.
func testTakeIdleConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const idle, takers = 20, 16
	for i := range idle {
		addPooled(t, s, fmt.Sprintf("sb_%02d", i), "p", "n1", "ready")
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range takers {
		wg.Go(func() {
			for {
				sb, err := take(ctx, s, "p", "", 0)
				if errors.Is(err, errdefs.ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("take: %v", err)
					return
				}
				mu.Lock()
				seen[sb.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != idle {
		t.Fatalf("%d sandboxes handed out, want %d", len(seen), idle)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s handed out %d times", id, n)
		}
	}
}

func testTemplates(t *testing.T, s store.Store) {
	ctx := context.Background()
	tpl := store.Template{Name: "slow", Base: "base", Hooks: `{"setup":"sleep 2"}`}
	if err := s.CreateTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTemplate(ctx, tpl); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.GetTemplate(ctx, "slow")
	if err != nil || got.Base != "base" || got.Hooks != tpl.Hooks || got.CreatedAt.IsZero() {
		t.Fatalf("get: %+v %v", got, err)
	}
	list, err := s.ListTemplates(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.DeleteTemplate(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTemplate(ctx, "slow"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// take is TakeIdle as the lifecycle service asks it.
func take(ctx context.Context, s store.Store, pool, node string, sessionTimeout int) (store.Sandbox, error) {
	return s.TakeIdle(ctx, store.Take{Pool: pool, Node: node, From: "ready", To: "running", SessionTimeout: sessionTimeout, OnTimeout: "kill"})
}
