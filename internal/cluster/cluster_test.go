package cluster_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/cluster"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func openStore(t *testing.T) *sqlstore.DB { return storetest.SQLite(t) }

// services is the lifecycle service, for what the cluster asks of it (a
// lost node's sandboxes); these tests make no sandboxes, so it has no
// runtime.
func services(st *sqlstore.DB, ev *events.Broker) *sandbox.Service {
	return sandbox.New(nil, st, ev, sandbox.Config{Node: "a"})
}

// A call to another node keeps its path and query and carries the secret,
// the tenant and the forwarding mark.
func TestCall(t *testing.T) {
	st := openStore(t)
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ctx := context.Background()
	if _, err := st.Heartbeat(ctx, store.Node{ID: "b", Address: srv.URL, Capacity: 1, Incarnation: "b"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	ev := events.NewBroker()
	c := cluster.New(st, services(st, ev), ev, cluster.Options{Node: "a", Address: "http://a", Capacity: 1})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Multi() {
		t.Fatal("b is up, yet Multi is false")
	}
	if err := c.Call(ctx, "b", "team", "POST", "/v1/internal/sandboxes/sb_1/retire?reason=drain"); err != nil {
		t.Fatal(err)
	}
	if got.URL.Path != "/v1/internal/sandboxes/sb_1/retire" || got.URL.Query().Get("reason") != "drain" {
		t.Fatalf("called %s", got.URL)
	}
	if got.Header.Get("Authorization") != "Bearer "+c.Secret() || got.Header.Get(cluster.HeaderTenant) != "team" ||
		got.Header.Get(cluster.HeaderForwarded) != c.Secret() || len(c.Secret()) < 20 {
		t.Fatalf("headers %v", got.Header)
	}
	if err := c.Call(ctx, "nobody", "team", "GET", "/x"); err == nil {
		t.Fatal("a call to an unknown node succeeded")
	}
}

// A node whose heart stops is marked down by another, and its sandboxes
// lost, with events.
func TestSilentNodeIsLost(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	if _, err := st.Heartbeat(ctx, store.Node{ID: "b", Address: "http://b", Capacity: 1, Incarnation: "b"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []store.Sandbox{
		{ID: "sb_b1", Tenant: "t", Template: "base", Status: "running", Spec: "{}", Node: "b"},
		{ID: "sb_b2", Tenant: "t", Template: "base", Status: "stopped", Spec: "{}", Node: "b"},
		{ID: "sb_a1", Tenant: "t", Template: "base", Status: "running", Spec: "{}", Node: "a"},
	} {
		if err := st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	ev := events.NewBroker()
	sub := ev.Subscribe(16, nil)
	defer sub.Close()
	c := cluster.New(st, services(st, ev), ev, cluster.Options{Node: "a", Address: "http://a", Capacity: 1,
		Heartbeat: 50 * time.Millisecond, NodeTimeout: 300 * time.Millisecond})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case e := <-sub.C:
		if e.Sandbox != "sb_b1" || e.Status != "lost" || e.Reason != "node_lost" {
			t.Fatalf("event %+v", e)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no lost event")
	}
	for id, want := range map[string]string{"sb_b1": "lost", "sb_b2": "stopped", "sb_a1": "running"} {
		if sb, _ := st.GetSandbox(ctx, id); sb.Status != want {
			t.Errorf("%s is %s, want %s", id, sb.Status, want)
		}
	}
	if c.Multi() {
		t.Fatal("b is down, yet Multi is true")
	}
}

// A second process under a live node's name is refused, with the holder's
// address in the message (its reconciler would otherwise destroy the
// first one's sandboxes as unknown). Once the first stops, the name can be
// taken over.
func TestNodeNameHeldByALiveNode(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	ev := events.NewBroker()
	opts := func(addr string) cluster.Options {
		return cluster.Options{Node: "n", Address: addr, Capacity: 1, Heartbeat: 20 * time.Millisecond, NodeTimeout: time.Minute}
	}
	first := cluster.New(st, services(st, ev), ev, opts("http://first:7423"))
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	second := cluster.New(st, services(st, ev), ev, opts("http://second:7423"))
	err := second.Start(ctx)
	if !errors.Is(err, cluster.ErrNameTaken) || !strings.Contains(err.Error(), "http://first:7423") || !strings.Contains(err.Error(), "--node") {
		second.Close()
		first.Close()
		t.Fatalf("second node under a live name: %v", err)
	}
	first.Close() // its heart stops
	third := cluster.New(st, services(st, ev), ev, opts("http://third:7423"))
	if err := third.Start(ctx); err != nil {
		t.Fatalf("a silent name is not taken over: %v", err)
	}
	third.Close()
}

// With a store only one process can open (SQLite), a restart right after a
// crash takes the name back at once.
func TestNodeNameExclusiveStore(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	if _, err := st.Heartbeat(ctx, store.Node{ID: "n", Address: "http://crashed", Capacity: 1, Incarnation: "old"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	ev := events.NewBroker()
	c := cluster.New(st, services(st, ev), ev, cluster.Options{Node: "n", Address: "http://new", Capacity: 1, Exclusive: true})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	nodes, _ := st.ListNodes(ctx)
	if len(nodes) != 1 || nodes[0].Address != "http://new" {
		t.Fatalf("nodes %+v", nodes)
	}
}
