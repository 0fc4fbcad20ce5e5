package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// TestPoolNetwork: a pool's sandboxes have its egress policy, a session
// may change it, and the reset after a release gives the pool's back.
func TestPoolNetwork(t *testing.T) {
	e := newEnvWith(t, nil, linux.Config{Egress: linuxtest.Engine(t, nil)}, sandbox.Config{DefaultNetwork: sandbox.Network{Egress: "open"}})
	ctx := context.Background()
	allow := sandbox.Network{Egress: "allowlist", Allow: []string{"allowed.test", "*.pkg.test"}}
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "bad", Template: "base",
		Network: &sandbox.Network{Egress: "allowlist", Allow: []string{"*"}}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a pool with a bad network: %v", err)
	}
	in, err := e.m.Create(ctx, "t", pool.Config{Name: "net", Template: "base", MinIdle: 1, Network: &allow})
	if err != nil || in.Network == nil || !in.Network.Equal(allow) {
		t.Fatalf("create: %+v %v", in, err)
	}
	e.waitIdle(t, "net", 1)
	sb, err := e.m.Acquire(ctx, "t", "net", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !sb.Network.Equal(allow) {
		t.Fatalf("acquired sandbox's network: %+v", sb.Network)
	}
	if r, _ := e.rt.Get(ctx, sb.ID); !r.Network.Equal(allow) {
		t.Fatalf("runtime: %+v", r.Network)
	}
	open := sandbox.Network{Egress: "open"}
	if _, err := e.svc.SetNetwork(ctx, "t", sb.ID, open); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.rt.Get(ctx, sb.ID); !r.Network.Equal(open) {
		t.Fatalf("runtime during the session: %+v", r.Network)
	}
	if _, err := e.m.Release(ctx, "t", sb.ID, ""); err != nil {
		t.Fatal(err)
	}
	// Reset, it is idle again (with or without another made while it was
	// out: that depends on when the pool's loop looked).
	var got sandbox.Sandbox
	for end := time.Now().Add(30 * time.Second); got.Status != sandbox.StatusReady; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the released sandbox is not idle again within 30s: %s %q", got.Status, got.Error)
		}
		got, err = e.svc.Get(ctx, "t", sb.ID)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !got.Network.Equal(allow) {
		t.Fatalf("after the reset: %+v", got.Network)
	}
	if r, _ := e.rt.Get(ctx, sb.ID); !r.Network.Equal(allow) {
		t.Fatalf("runtime after the reset: %+v", r.Network)
	}
	// Without a network of its own a pool's sandboxes get the default.
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "def", Template: "base", MinIdle: 1}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, "def", 1)
	d, err := e.m.Acquire(ctx, "t", "def", 0)
	if err != nil || !d.Network.Equal(open) {
		t.Fatalf("default pool's sandbox: %+v %v", d.Network, err)
	}
	for _, name := range []string{"net", "def"} {
		if err := e.m.Delete(ctx, "t", name); err != nil {
			t.Fatal(err)
		}
	}
}
