package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/store"
)

func testNodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, n := range []store.Node{{ID: "n1", Address: "http://a:1", Capacity: 10, Incarnation: "i1"}, {ID: "n2", Address: "http://b:1", Capacity: 20, Incarnation: "i2"}} {
		if _, err := s.Heartbeat(ctx, n, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].ID != "n1" || nodes[0].Status != "up" || nodes[1].Capacity != 20 || nodes[0].HeartbeatAt.IsZero() {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
	// Its sandboxes become lost with it; other nodes' are untouched.
	for i, node := range []string{"n1", "n1", "n2"} {
		status := []string{"running", "stopped", "running"}[i]
		if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb_" + string(rune('a'+i)), Tenant: "t", Template: "base", Status: status, Spec: "{}", Node: node}); err != nil {
			t.Fatal(err)
		}
	}
	// A node seen recently is not marked down; one silent long enough is,
	// once.
	if _, down, err := s.MarkNodeLost(ctx, "n1", time.Now().Add(-time.Minute), []string{"running"}, "lost", "x"); err != nil || down {
		t.Fatalf("recent node marked down: %v %v", down, err)
	}
	later := time.Now().Add(time.Minute)
	lost, down, err := s.MarkNodeLost(ctx, "n1", later, []string{"running", "paused"}, "lost", "node n1 lost")
	if err != nil || !down || len(lost) != 1 || lost[0].ID != "sb_a" || lost[0].Status != "lost" || lost[0].Error != "node n1 lost" {
		t.Fatalf("lost: %+v %v %v", lost, down, err)
	}
	if _, down, _ := s.MarkNodeLost(ctx, "n1", later, []string{"running"}, "lost", "x"); down {
		t.Fatal("marked down twice")
	}
	if sb, _ := s.GetSandbox(ctx, "sb_c"); sb.Status != "running" {
		t.Fatalf("another node's sandbox: %s", sb.Status)
	}
	// The cluster secret is made once.
	if sec, err := s.ClusterSecret(ctx, "first"); err != nil || sec != "first" {
		t.Fatalf("secret: %q %v", sec, err)
	}
	if sec, _ := s.ClusterSecret(ctx, "second"); sec != "first" {
		t.Fatalf("secret changed to %q", sec)
	}
	// A heartbeat brings it back up, even from another process (the
	// record was down).
	if _, err := s.Heartbeat(ctx, store.Node{ID: "n1", Address: "http://a:2", Capacity: 10, Incarnation: "i1b"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	nodes, _ = s.ListNodes(ctx)
	if nodes[0].Status != "up" || nodes[0].Address != "http://a:2" || nodes[0].Incarnation != "i1b" {
		t.Fatalf("after heartbeat: %+v", nodes[0])
	}
}

func testNodeName(t *testing.T, s store.Store) {
	ctx := context.Background()
	first := store.Node{ID: "n", Address: "http://first:1", Capacity: 1, Incarnation: "a"}
	if _, err := s.Heartbeat(ctx, first, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Another process under the same name is refused while the first's
	// heart beats, and told who holds it.
	second := store.Node{ID: "n", Address: "http://second:1", Capacity: 1, Incarnation: "b"}
	holder, err := s.Heartbeat(ctx, second, time.Now().Add(-time.Minute))
	if !errors.Is(err, errdefs.ErrConflict) || holder.Address != "http://first:1" || holder.Incarnation != "a" {
		t.Fatalf("second process under a live name: %+v %v", holder, err)
	}
	// The first goes on beating.
	if _, err := s.Heartbeat(ctx, first, time.Time{}); err != nil {
		t.Fatalf("the holder's own heartbeat: %v", err)
	}
	// Once the first's heart is older than staleBefore, the name is taken
	// over, and the first's next heartbeat is refused.
	if _, err := s.Heartbeat(ctx, second, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("take over a silent name: %v", err)
	}
	if holder, err := s.Heartbeat(ctx, first, time.Time{}); !errors.Is(err, errdefs.ErrConflict) || holder.Incarnation != "b" {
		t.Fatalf("old holder after a takeover: %+v %v", holder, err)
	}
}

func testLeases(t *testing.T, s store.Store) {
	ctx := context.Background()
	l, err := s.AcquireLease(ctx, "pool/p", "n1", time.Second)
	if err != nil || l.Holder != "n1" || l.Term != 1 {
		t.Fatalf("first acquire: %+v %v", l, err)
	}
	// Held: another holder does not get it; renewal keeps the term.
	if l, _ := s.AcquireLease(ctx, "pool/p", "n2", time.Second); l.Holder != "n1" {
		t.Fatalf("n2 took a held lease: %+v", l)
	}
	if l, _ := s.AcquireLease(ctx, "pool/p", "n1", time.Second); l.Holder != "n1" || l.Term != 1 {
		t.Fatalf("renewal: %+v", l)
	}
	// A fenced write passes while held.
	fence := &store.Fence{Lease: "pool/p", Holder: "n1", Term: 1}
	if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb_f1", Tenant: "t", Template: "base", Status: "creating", Spec: "{}", Fence: fence}); err != nil {
		t.Fatal(err)
	}
	ready := "ready"
	if err := s.UpdateSandbox(ctx, "sb_f1", []string{"creating"}, store.Update{Status: &ready, Fence: fence}); err != nil {
		t.Fatal(err)
	}
	// Expired: another holder takes it with a new term, and the old
	// holder's fenced writes change nothing.
	if _, err := s.AcquireLease(ctx, "pool/p", "n1", -time.Second); err != nil { // expire it
		t.Fatal(err)
	}
	l, err = s.AcquireLease(ctx, "pool/p", "n2", time.Second)
	if err != nil || l.Holder != "n2" || l.Term != 2 {
		t.Fatalf("takeover: %+v %v", l, err)
	}
	if err := s.CreateSandbox(ctx, store.Sandbox{ID: "sb_f2", Tenant: "t", Template: "base", Status: "creating", Spec: "{}", Fence: fence}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("deposed leader's create: %v", err)
	}
	if _, err := s.GetSandbox(ctx, "sb_f2"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deposed leader's create left a row: %v", err)
	}
	stopped := "stopped"
	if err := s.UpdateSandbox(ctx, "sb_f1", nil, store.Update{Status: &stopped, Fence: fence}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("deposed leader's update: %v", err)
	}
	if sb, _ := s.GetSandbox(ctx, "sb_f1"); sb.Status != "ready" {
		t.Fatalf("deposed leader's update changed %s", sb.Status)
	}
	// Released: free for anyone.
	if err := s.ReleaseLease(ctx, "pool/p", "n2", 2); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.AcquireLease(ctx, "pool/p", "n3", time.Second); l.Holder != "n3" {
		t.Fatalf("after release: %+v", l)
	}
}

// Many contenders at once: one holder per term.
func testLeaseContention(t *testing.T, s store.Store) {
	ctx := context.Background()
	var mu sync.Mutex
	holders := map[string]bool{}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			l, err := s.AcquireLease(ctx, "pool/c", string(rune('a'+i)), time.Minute)
			if err != nil {
				t.Errorf("acquire: %v", err)
				return
			}
			mu.Lock()
			holders[l.Holder] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(holders) != 1 {
		t.Fatalf("holders seen: %v", holders)
	}
}
