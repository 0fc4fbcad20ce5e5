package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/store/pgtest"
)

const (
	clusterLeaseTTL    = time.Second
	clusterNodeTimeout = 3 * time.Second
)

// startCluster starts n nodes of `sandpool serve` on one PostgreSQL
// database; node i is named node<i>. The first makes the admin key.
func startCluster(tb testing.TB, n int) []*server {
	tb.Helper()
	db := pgtest.URL(tb)
	var nodes []*server
	for i := range n {
		s := startServer(tb, "", "--store", db, "--node", fmt.Sprintf("node%d", i),
			"--lease-ttl", clusterLeaseTTL.String(), "--node-timeout", clusterNodeTimeout.String())
		if i > 0 {
			s.adminKey = nodes[0].adminKey
		}
		nodes = append(nodes, s)
	}
	return nodes
}

// A client may talk to any node: requests for a sandbox reach the node it
// lives on, streams and files included.
func TestClusterForwarding(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := context.Background()
	k, err := nodes[0].client("").CreateKey(ctx, "team", false)
	if err != nil {
		t.Fatal(err)
	}
	c := make([]*client.Client, 3)
	for i, n := range nodes {
		c[i] = n.client(k.Secret)
	}
	sb, err := c[0].CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Node != "node0" {
		t.Fatalf("created through node0, lives on %q", sb.Node)
	}
	// Exec through another node.
	res, err := c[1].Exec(ctx, sb.ID, client.ExecRequest{Shell: "echo from $(hostname)"})
	if err != nil || string(res.Stdout) != "from sandbox\n" {
		t.Fatalf("exec through node1: %q %v", res.Stdout, err)
	}
	// A stream through another node arrives as it is made.
	st, err := c[2].ExecStream(ctx, sb.ID, client.ExecRequest{Shell: "echo one; sleep 0.3; echo two"})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for {
		ev, err := st.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "stdout" {
			chunks = append(chunks, string(ev.Data))
		}
	}
	st.Close()
	if strings.Join(chunks, "") != "one\ntwo\n" || len(chunks) < 2 {
		t.Fatalf("stream through node2: %q", chunks)
	}
	// A file up through one node, down through another.
	data := bytes.Repeat([]byte("sandpool "), 1<<17)
	if _, err := c[2].WriteFile(ctx, sb.ID, "/home/user/f", bytes.NewReader(data), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, err := c[1].ReadFile(ctx, sb.ID, "/home/user/f")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file through two nodes: %d bytes, %v", len(got), err)
	}
	// Another tenant is refused on every node.
	other := nodes[2].tenant("other")
	if _, err := other.GetSandbox(ctx, sb.ID); apiErr(err) == nil || apiErr(err).Status != 404 {
		t.Fatalf("other tenant through node2: %v", err)
	}
	// Every node lists it; any node deletes it.
	for i := range c {
		list, err := c[i].ListSandboxes(ctx, client.ListOptions{})
		if err != nil || len(list) != 1 || list[0].ID != sb.ID {
			t.Fatalf("list through node%d: %+v %v", i, list, err)
		}
	}
	if err := c[1].DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := c[2].GetSandbox(ctx, sb.ID); err != nil || got.Status != "stopped" {
		t.Fatalf("after delete: %+v %v", got, err)
	}
}

// 1,000 acquires spread over three nodes never hand out one sandbox twice.
func TestClusterAcquires(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := context.Background()
	c := make([]*client.Client, 3)
	for i, n := range nodes {
		c[i] = n.client("")
	}
	if _, err := c[0].CreatePool(ctx, client.PoolConfig{Name: "shared", Template: "base", MinIdle: 12, MaxIdle: 24,
		AcquirePolicy: "wait", AcquireTimeout: 60}); err != nil {
		t.Fatal(err)
	}
	waitPool(t, c[1], "shared", 12)
	var held sync.Map
	var acquired, doubles atomic.Int64
	perNode := map[string]*atomic.Int64{}
	for _, n := range []string{"node0", "node1", "node2"} {
		perNode[n] = &atomic.Int64{}
	}
	const workers, total = 24, 1000
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		cl := c[w%3]
		wg.Go(func() {
			for next.Add(1) <= total {
				sb, err := cl.Acquire(ctx, "shared", 0)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				acquired.Add(1)
				perNode[sb.Node].Add(1)
				if _, dup := held.LoadOrStore(sb.ID, w); dup {
					doubles.Add(1)
					t.Errorf("sandbox %s handed to two callers at once", sb.ID)
				}
				held.Delete(sb.ID)
				if _, err := cl.Release(ctx, sb.ID, false); err != nil {
					t.Errorf("release: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d acquires; sandboxes handed out by node: node0 %d, node1 %d, node2 %d", acquired.Load(),
		perNode["node0"].Load(), perNode["node1"].Load(), perNode["node2"].Load())
	if acquired.Load() != total || doubles.Load() != 0 {
		t.Fatalf("%d acquires, %d double hand-outs", acquired.Load(), doubles.Load())
	}
	if err := c[2].DeletePool(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
}

// Killing the leader's process: another node takes over the pool within
// two lease periods; the dead node's sandboxes are marked lost once its
// heart has been silent long enough, and the pool is refilled on the
// others.
func TestClusterFailover(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := context.Background()
	c := make([]*client.Client, 3)
	for i, n := range nodes {
		c[i] = n.client("")
	}
	if _, err := c[0].CreatePool(ctx, client.PoolConfig{Name: "ha", Template: "base", MinIdle: 4, MaxIdle: 8}); err != nil {
		t.Fatal(err)
	}
	waitPool(t, c[0], "ha", 4)
	leader := -1
	for i := range c {
		if p, err := c[i].GetPool(ctx, "ha"); err == nil && p.Leader != "" {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no node says it leads the pool")
	}
	// The leader also runs a sandbox of its own.
	sb, err := c[leader].CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c[leader].ListSandboxes(ctx, client.ListOptions{Statuses: []string{"ready"}})
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	nodes[leader].cmd.Process.Kill()
	<-nodes[leader].exited
	survivor := c[(leader+1)%3]

	// Takeover: another node leads (how soon, on a fake clock, is the
	// leader package's test).
	for {
		led := false
		for i := range c {
			if i == leader {
				continue
			}
			if p, err := c[i].GetPool(ctx, "ha"); err == nil && p.Leader != "" {
				led = true
			}
		}
		if led {
			break
		}
		if time.Since(killed) > time.Minute {
			t.Fatalf("no new leader %v after the leader died (lease %v)", time.Since(killed), clusterLeaseTTL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new leader after %v", time.Since(killed))

	// Lost: the dead node's sandboxes, once its heart is silent long enough.
	deadline := time.Now().Add(clusterNodeTimeout + 10*time.Second)
	for {
		got, err := survivor.GetSandbox(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == "lost" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead node's sandbox is %q", got.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range idle {
		if got, _ := survivor.GetSandbox(ctx, s.ID); got.Status != "lost" {
			t.Errorf("the dead node's idle sandbox %s is %q", s.ID, got.Status)
		}
	}
	// Refilled elsewhere, and usable.
	p := waitPool(t, survivor, "ha", 4)
	t.Logf("pool refilled after %v: %+v", time.Since(killed), p)
	got, err := survivor.Acquire(ctx, "ha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node == nodes[leader].cmd.Args[0] || got.Node == fmt.Sprintf("node%d", leader) {
		t.Fatalf("acquired a sandbox on the dead node: %+v", got)
	}
	if _, err := survivor.Exec(ctx, got.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.Release(ctx, got.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := survivor.DeletePool(ctx, "ha"); err != nil {
		t.Fatal(err)
	}
}
