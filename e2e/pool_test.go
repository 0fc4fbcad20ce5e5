package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

func waitPool(t testing.TB, c *client.Client, name string, idle int) *client.Pool {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := c.GetPool(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if p.Idle >= idle && p.Creating == 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %+v, want %d idle", name, p, idle)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPools(t *testing.T) {
	s := startServer(t, "")
	admin := s.client("")
	ctx := context.Background()
	// A template whose setup is slow: the pool hides it.
	if _, err := admin.DefineTemplate(ctx, "slow", "base", client.Hooks{Setup: "sleep 1; echo done > /opt/setup",
		SessionSetup: "echo fresh > /tmp/session"}); err != nil {
		t.Fatal(err)
	}
	c := s.tenant("team")
	p, err := c.CreatePool(ctx, client.PoolConfig{Name: "warm", Template: "slow", MinIdle: 2, MaxIdle: 3, MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != "active" || p.MaxIdle != 3 || p.AcquirePolicy != "fail_fast" {
		t.Fatalf("created: %+v", p)
	}
	waitPool(t, c, "warm", 2)

	start := time.Now()
	sb, err := c.Acquire(ctx, "warm", 0)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("acquire from a pool of a template with a 1 s setup took %v", took)
	if sb.Status != "running" || sb.Pool != "warm" || sb.Template != "slow" {
		t.Fatalf("acquired: %+v", sb)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "cat /opt/setup /tmp/session; echo mine > /tmp/mine"})
	if err != nil || string(res.Stdout) != "done\nfresh\n" {
		t.Fatalf("setup and session setup: %q %v", res.Stdout, err)
	}
	// Another tenant can neither see the pool nor release the sandbox.
	other := s.tenant("others")
	if _, err := other.GetPool(ctx, "warm"); apiErr(err) == nil || apiErr(err).Status != 404 {
		t.Fatalf("other tenant's get: %v", err)
	}
	if _, err := other.Release(ctx, sb.ID, false); apiErr(err) == nil || apiErr(err).Status != 404 {
		t.Fatalf("other tenant's release: %v", err)
	}
	if _, err := c.Release(ctx, sb.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, sb.ID, false); apiErr(err) == nil || apiErr(err).Status != 409 {
		t.Fatalf("second release: %v", err)
	}
	// A create naming the pool acquires; the released sandbox comes back
	// fresh (session setup done again, nothing of the last session).
	waitPool(t, c, "warm", 2)
	// With an Idempotency-Key, a create from a pool answers the same again.
	first, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Pool: "warm", IdempotencyKey: "acq-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Pool: "warm", IdempotencyKey: "acq-1"})
	if err != nil || again.ID != first.ID {
		t.Fatalf("idempotent acquire: %+v %v, want %s", again, err, first.ID)
	}
	if _, err := c.Release(ctx, first.ID, false); err != nil {
		t.Fatal(err)
	}
	waitPool(t, c, "warm", 2)
	seen := map[string]bool{}
	for range 3 {
		got, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Pool: "warm"})
		if err != nil {
			t.Fatal(err)
		}
		seen[got.ID] = true
		res, err := c.Exec(ctx, got.ID, client.ExecRequest{Shell: "cat /tmp/session; ls /tmp"})
		if err != nil || string(res.Stdout) != "fresh\nsession\n" {
			t.Fatalf("sandbox %s (use %d): %q %v", got.ID, got.Uses, res.Stdout, err)
		}
		if _, err := c.Release(ctx, got.ID, false); err != nil {
			t.Fatal(err)
		}
		waitPool(t, c, "warm", 2)
	}
	// Fatal ends a sandbox; max_uses 2 ends the rest in time.
	got, err := c.Acquire(ctx, "warm", 0)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := c.Release(ctx, got.ID, true)
	if err != nil || rel.Status != "stopped" {
		t.Fatalf("fatal release: %+v %v", rel, err)
	}
	// Resize down to nothing: acquires find the pool empty (429).
	zero := 0
	if _, err := c.UpdatePool(ctx, "warm", client.PoolUpdate{MaxIdle: &zero}); apiErr(err) == nil || apiErr(err).Status != 422 {
		t.Fatalf("max_idle below min_idle: %v", err)
	}
	if _, err := c.UpdatePool(ctx, "warm", client.PoolUpdate{MinIdle: &zero, MaxIdle: &zero}); err != nil {
		t.Fatal(err)
	}
	// Idle sandboxes above max_idle are shed by the pool's loop.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := c.GetPool(ctx, "warm")
		if err != nil {
			t.Fatal(err)
		}
		if p.Idle == 0 && p.Resetting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool not shed: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = c.Acquire(ctx, "warm", 0)
	if ae := apiErr(err); ae == nil || ae.Status != 429 || ae.Code != "pool_empty" {
		t.Fatalf("acquire from an empty pool: %v", err)
	}
	// Bad settings are refused with the setting named.
	for _, bad := range []client.PoolConfig{
		{Name: "x", Template: "base", MinIdle: -1},
		{Name: "x", Template: "base", MinIdle: 3, MaxIdle: 2},
		{Name: "x", Template: "base", MinIdle: 1, MaxIdle: 4, MaxTotal: 2},
		{Name: "x", Template: "base", AcquirePolicy: "sometimes"},
		{Name: "Bad Name", Template: "base"},
		{Name: "x", Template: "nope"},
	} {
		if _, err := c.CreatePool(ctx, bad); apiErr(err) == nil || (apiErr(err).Status != 422 && apiErr(err).Status != 404) {
			t.Errorf("create %+v: %v", bad, err)
		}
	}
	if err := c.DeletePool(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	if list, err := c.ListSandboxes(ctx, client.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("sandboxes after the pool was deleted: %+v %v", list, err)
	}
	if pools, _ := c.ListPools(ctx); len(pools) != 0 {
		t.Fatalf("pools after delete: %+v", pools)
	}
}
