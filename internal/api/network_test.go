package api_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/api"
	"github.com/sandpool/sandpool/internal/egress"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/idempotency"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
)

// apiServer runs the API over a real runtime (with eng, if not nil) and
// SQLite, and returns clients for an admin and for two tenants.
func apiServer(t *testing.T, eng *egress.Engine, def sandbox.Network) (admin, t1, t2 *client.Client) {
	t.Helper()
	ctx := context.Background()
	rt := linuxtest.OpenWith(t, linux.Config{Egress: eng})
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := sandbox.New(rt, st, events.NewBroker(), sandbox.Config{Node: "n1", DefaultNetwork: def, Log: discard()})
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ks := keys.New(st)
	pools := pool.NewManager(svc, st, svc.Events(), pool.Options{Node: "n1", Log: discard()})
	if err := pools.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(svc, pools, ks, idempotency.New(st), api.Config{Log: discard()}))
	t.Cleanup(func() { srv.Close(); pools.Close(); svc.Close() })
	mk := func(tenant string, isAdmin bool) *client.Client {
		k, err := ks.Create(ctx, tenant, isAdmin, keys.Native)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(srv.URL, k.Secret, client.WithRetryBudget(0))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return mk("admin", true), mk("t1", false), mk("t2", false)
}

// wantError asserts an API error's status and code (and that its message
// contains msg).
func wantError(t *testing.T, err error, status int, code, msg string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code || !strings.Contains(ae.Message, msg) {
		t.Fatalf("got %v, want %d %s (%q)", err, status, code, msg)
	}
}

func TestNetworkRoutes(t *testing.T) {
	eng := linuxtest.Engine(t, prometheus.NewRegistry())
	admin, t1, t2 := apiServer(t, eng, sandbox.Network{Egress: "open"})
	ctx := context.Background()

	sb, err := t1.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil || sb.Network.Egress != "open" {
		t.Fatalf("create with the default: %+v %v", sb, err)
	}
	_, err = t1.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base",
		Network: &client.Network{Egress: "allowlist", Allow: []string{"pypi.org", "a..b"}}})
	wantError(t, err, 422, "invalid", `allow[1] "a..b"`)

	n, err := t1.GetNetwork(ctx, sb.ID)
	if err != nil || n.Egress != "open" || n.Stats.Connections != 0 {
		t.Fatalf("GetNetwork: %+v %v", n, err)
	}
	want := client.Network{Egress: "allowlist", Allow: []string{"pypi.org", "*.pythonhosted.org"}, Deny: []string{"203.0.113.0/24"}}
	n, err = t1.SetNetwork(ctx, sb.ID, want)
	if err != nil || n.Egress != want.Egress || strings.Join(n.Allow, ",") != strings.Join(want.Allow, ",") || len(n.Deny) != 1 {
		t.Fatalf("SetNetwork: %+v %v", n, err)
	}
	if got, err := t1.GetSandbox(ctx, sb.ID); err != nil || got.Network.Egress != "allowlist" || len(got.Network.Allow) != 2 {
		t.Fatalf("GetSandbox after SetNetwork: %+v %v", got, err)
	}
	_, err = t1.SetNetwork(ctx, sb.ID, client.Network{Egress: "sometimes"})
	wantError(t, err, 422, "invalid", "sometimes")
	_, err = t2.SetNetwork(ctx, sb.ID, want)
	wantError(t, err, 404, "not_found", "")
	_, err = t2.GetNetwork(ctx, sb.ID)
	wantError(t, err, 404, "not_found", "")

	// Templates and pools take a network too.
	setup := client.Network{Egress: "allowlist", Allow: []string{"deb.debian.org"}}
	tpl, err := admin.DefineTemplate(ctx, "online", "base", client.Hooks{Setup: "true", Network: &setup})
	if err != nil || tpl.Hooks.Network == nil || tpl.Hooks.Network.Allow[0] != "deb.debian.org" {
		t.Fatalf("template: %+v %v", tpl, err)
	}
	p, err := t1.CreatePool(ctx, client.PoolConfig{Name: "p", Template: "base", Network: &client.Network{Egress: "none"}})
	if err != nil || p.Network == nil || p.Network.Egress != "none" {
		t.Fatalf("pool: %+v %v", p, err)
	}
	if err := t1.DeletePool(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := t1.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
}

// TestEgressDisabled: a server without egress refuses every mode but
// none, with a code that says why.
func TestEgressDisabled(t *testing.T) {
	_, t1, _ := apiServer(t, nil, sandbox.Network{})
	ctx := context.Background()
	_, err := t1.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Network: &client.Network{Egress: "open"}})
	wantError(t, err, 403, "egress_disabled", "egress is disabled")
	sb, err := t1.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil || sb.Network.Egress != "none" {
		t.Fatalf("create: %+v %v", sb, err)
	}
	_, err = t1.SetNetwork(ctx, sb.ID, client.Network{Egress: "allowlist", Allow: []string{"pypi.org"}})
	wantError(t, err, 403, "egress_disabled", "")
	if err := t1.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
}
