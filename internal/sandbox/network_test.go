package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/image"
	it "github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// These tests make real sandboxes with a way out to the fake internet of
// package egresstest (TestMain moved the test binary into a network
// namespace of its own, where it lives).

// newNetEnv is newEnv with an egress engine.
func newNetEnv(t *testing.T, cfg sandbox.Config) *env {
	t.Helper()
	eng := linuxtest.Engine(t, nil)
	rt := linuxtest.OpenWith(t, linux.Config{Egress: eng})
	st := storetest.SQLite(t)
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	svc := sandbox.New(rt, st, events.NewBroker(), cfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &env{rt: rt, st: st, svc: svc}
}

var (
	openNet = sandbox.Network{Egress: "open"}
	noneNet = sandbox.Network{Egress: "none"}
)

// reach runs the probe (egresstest.Probe) in a sandbox and reports
// whether it worked, with its output.
func (e *env) reach(t *testing.T, tenant, id string, args ...string) (string, bool) {
	t.Helper()
	ctx := context.Background()
	f, err := e.svc.Files(ctx, tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(ctx, egresstest.ProbePath, strings.NewReader(egresstest.Probe), fsys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, st := e.run(t, tenant, id, "python3 "+egresstest.ProbePath+" "+strings.Join(args, " "))
	return strings.TrimSpace(out), st.Code == 0
}

func TestNetworkDefaultAndRequested(t *testing.T) {
	e := newNetEnv(t, sandbox.Config{DefaultNetwork: openNet})
	ctx := context.Background()
	def := e.create(t, "t1", sandbox.CreateRequest{})
	if !def.Network.Equal(openNet) {
		t.Fatalf("network of a sandbox made with the default: %+v", def.Network)
	}
	if in, _ := e.rt.Get(ctx, def.ID); !in.Network.Equal(openNet) {
		t.Fatalf("runtime's policy: %+v", in.Network)
	}
	if out, ok := e.reach(t, "t1", def.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("egress open: %s", out)
	}
	none := e.create(t, "t1", sandbox.CreateRequest{Network: &sandbox.Network{}})
	if !none.Network.Equal(noneNet) || none.Network.Egress != "none" {
		t.Fatalf("network of a sandbox made with egress \"\": %+v", none.Network)
	}
	if out, ok := e.reach(t, "t1", none.ID, "echo", "203.0.113.20", "7000"); ok {
		t.Fatalf("egress none went through: %s", out)
	}
	al := e.create(t, "t1", sandbox.CreateRequest{Network: &sandbox.Network{Egress: "allowlist", Allow: []string{"203.0.113.20"}}})
	got, err := e.svc.Get(ctx, "t1", al.ID)
	if err != nil || got.Network.Egress != "allowlist" || len(got.Network.Allow) != 1 {
		t.Fatalf("Get: %+v %v", got.Network, err)
	}
	if out, ok := e.reach(t, "t1", al.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("listed address: %s", out)
	}
	if out, ok := e.reach(t, "t1", al.ID, "echo", "203.0.113.21", "7000"); ok {
		t.Fatalf("unlisted address: %s", out)
	}
	n, err := e.svc.Network(ctx, "t1", al.ID)
	if err != nil || n.Stats.Connections != 1 || n.Stats.Refused != 1 || n.Stats.BytesIn == 0 {
		t.Fatalf("Network: %+v %v", n, err)
	}
}

func TestNetworkInvalid(t *testing.T) {
	e := newNetEnv(t, sandbox.Config{DefaultNetwork: openNet})
	ctx := context.Background()
	for _, tc := range []struct {
		n    sandbox.Network
		want string
	}{
		{sandbox.Network{Egress: "everything"}, "everything"},
		{sandbox.Network{Egress: "allowlist", Allow: []string{"ok.test", "a..test"}}, `allow[1] "a..test"`},
		{sandbox.Network{Egress: "open", Allow: []string{"x.test"}}, "allow"},
		{sandbox.Network{Egress: "open", Deny: []string{"https://x.test/"}}, `deny[0]`},
	} {
		_, err := e.svc.Create(ctx, "t1", "", sandbox.CreateRequest{Template: "base", Network: &tc.n})
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create with %+v: %v (want invalid, naming %s)", tc.n, err, tc.want)
		}
	}
	if list, _ := e.svc.List(ctx, "t1", sandbox.ListOptions{Statuses: []sandbox.Status{sandbox.StatusCreating, sandbox.StatusRunning, sandbox.StatusFailed, sandbox.StatusStopped}}); len(list) != 0 {
		t.Fatalf("bad requests left %d sandboxes", len(list))
	}
}

// TestNetworkEgressDisabled: without an engine, only egress none is
// possible, and asking for more says so.
func TestNetworkEgressDisabled(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	_, err := e.svc.Create(context.Background(), "t1", "", sandbox.CreateRequest{Template: "base", Network: &openNet})
	if !errors.Is(err, errdefs.ErrPermission) || errdefs.CodeOf(err) != "egress_disabled" {
		t.Fatalf("egress open without an engine: %v", err)
	}
	sb := e.create(t, "t1", sandbox.CreateRequest{})
	if sb.Network.Egress != "none" {
		t.Fatalf("default network: %+v", sb.Network)
	}
}

func TestSetNetwork(t *testing.T) {
	e := newNetEnv(t, sandbox.Config{DefaultNetwork: openNet})
	ctx := context.Background()
	sb := e.create(t, "t1", sandbox.CreateRequest{})
	if out, ok := e.reach(t, "t1", sb.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("before: %s", out)
	}
	deny := sandbox.Network{Egress: "open", Deny: []string{"203.0.113.0/24"}}
	n, err := e.svc.SetNetwork(ctx, "t1", sb.ID, deny)
	if err != nil || !n.Network.Equal(deny) {
		t.Fatalf("SetNetwork: %+v %v", n, err)
	}
	if got, _ := e.svc.Get(ctx, "t1", sb.ID); !got.Network.Equal(deny) {
		t.Fatalf("Get after SetNetwork: %+v", got.Network)
	}
	if in, _ := e.rt.Get(ctx, sb.ID); !in.Network.Equal(deny) {
		t.Fatalf("runtime after SetNetwork: %+v", in.Network)
	}
	if out, ok := e.reach(t, "t1", sb.ID, "echo", "203.0.113.20", "7000"); ok {
		t.Fatalf("denied range after SetNetwork: %s", out)
	}
	// Bad input changes nothing; another tenant's sandbox is not found.
	if _, err := e.svc.SetNetwork(ctx, "t1", sb.ID, sandbox.Network{Egress: "allowlist", Allow: []string{"*"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad policy: %v", err)
	}
	if got, _ := e.svc.Get(ctx, "t1", sb.ID); !got.Network.Equal(deny) {
		t.Fatalf("a bad policy changed the sandbox's: %+v", got.Network)
	}
	if _, err := e.svc.SetNetwork(ctx, "t2", sb.ID, openNet); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another tenant's sandbox: %v", err)
	}
	// Paused (frozen, then archived): the new policy holds once resumed.
	for _, archive := range []bool{false, true} {
		if _, err := e.svc.Pause(ctx, "t1", sb.ID, sandbox.PauseOptions{Archive: archive}); err != nil {
			t.Fatal(err)
		}
		want := noneNet
		if archive {
			want = sandbox.Network{Egress: "allowlist", Allow: []string{"203.0.113.20"}}
		}
		if _, err := e.svc.SetNetwork(ctx, "t1", sb.ID, want); err != nil {
			t.Fatalf("SetNetwork while paused (archive %v): %v", archive, err)
		}
		if _, _, err := e.svc.Resume(ctx, "t1", sb.ID); err != nil {
			t.Fatal(err)
		}
		_, ok := e.reach(t, "t1", sb.ID, "echo", "203.0.113.20", "7000")
		if ok != archive {
			t.Fatalf("after a resume (archive %v) under %+v: reached %v", archive, want, ok)
		}
	}
	// A sandbox that is gone cannot change.
	if err := e.svc.Delete(ctx, "t1", sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetNetwork(ctx, "t1", sb.ID, openNet); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("SetNetwork of a stopped sandbox: %v", err)
	}
}

// TestTemplateSetupNetwork: a template's setup runs under the template's
// policy; the sandbox then gets its own.
func TestTemplateSetupNetwork(t *testing.T) {
	e := newNetEnv(t, sandbox.Config{DefaultNetwork: noneNet})
	ctx := context.Background()
	fetch := "curl -sS --max-time 10 http://allowed.test/ > /opt/fetched"
	setupNet := sandbox.Network{Egress: "allowlist", Allow: []string{"allowed.test"}}
	if _, err := e.svc.DefineTemplate(ctx, "fetcher", "base", sandbox.Hooks{Setup: fetch, Network: &setupNet}); err != nil {
		t.Fatal(err)
	}
	sb := e.create(t, "t1", sandbox.CreateRequest{Template: "fetcher"})
	if out, _ := e.run(t, "t1", sb.ID, "cat /opt/fetched"); !strings.Contains(out, "host=allowed.test") {
		t.Fatalf("what setup fetched: %q", out)
	}
	if !sb.Network.Equal(noneNet) {
		t.Fatalf("the sandbox's own network: %+v", sb.Network)
	}
	if in, _ := e.rt.Get(ctx, sb.ID); !in.Network.Equal(noneNet) {
		t.Fatalf("runtime's network after setup: %+v", in.Network)
	}
	if out, st := e.run(t, "t1", sb.ID, "curl -sS --max-time 5 http://allowed.test/"); st.Code == 0 {
		t.Fatalf("the sandbox kept the setup's network: %s", out)
	}
	// A template defined on it inherits the setup's network; one without
	// a network of its own sets up under the sandbox's policy, which here
	// has no way out.
	if _, err := e.svc.DefineTemplate(ctx, "fetcher2", "fetcher", sandbox.Hooks{}); err != nil {
		t.Fatal(err)
	}
	if tpl, _ := e.svc.Template(ctx, "fetcher2"); tpl.Hooks.Network == nil || !tpl.Hooks.Network.Equal(setupNet) {
		t.Fatalf("inherited setup network: %+v", tpl.Hooks.Network)
	}
	if _, err := e.svc.DefineTemplate(ctx, "offline", "base", sandbox.Hooks{Setup: fetch}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Create(ctx, "t1", "", sandbox.CreateRequest{Template: "offline"})
	var he *sandbox.HookError
	if !errors.As(err, &he) {
		t.Fatalf("setup without a network: %v", err)
	}
	if _, err := e.svc.Create(ctx, "t1", "", sandbox.CreateRequest{Template: "offline", Network: &setupNet}); err != nil {
		t.Fatalf("setup under the sandbox's own allowlist: %v", err)
	}
	// A build runs the setup under the template's policy too.
	var progress bytes.Buffer
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "built", From: "base", Build: true, Progress: &progress,
		Hooks: sandbox.Hooks{Setup: "curl -sS --max-time 10 https://allowed.test/ -k", Network: &setupNet}}); err != nil {
		t.Fatalf("build: %v\n%s", err, progress.String())
	}
	if !strings.Contains(progress.String(), "host=allowed.test") {
		t.Fatalf("build output: %q", progress.String())
	}
	// A bad setup network is refused when the template is defined.
	if _, err := e.svc.DefineTemplate(ctx, "bad", "base", sandbox.Hooks{Setup: "true",
		Network: &sandbox.Network{Egress: "allowlist", Allow: []string{"bad..name"}}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad template network: %v", err)
	}
}

// TestReconcileNetwork: a policy the runtime lost or never got (a change
// cut short, a link that could not be made again) is restored from the
// store by the reconciler.
func TestReconcileNetwork(t *testing.T) {
	e := newNetEnv(t, sandbox.Config{DefaultNetwork: openNet, ReconcileInterval: 50 * time.Millisecond})
	ctx := context.Background()
	sb := e.create(t, "t1", sandbox.CreateRequest{})
	// Behind the service's back, as a crash between the store's write
	// and the runtime's would leave it.
	if err := e.rt.SetNetwork(ctx, sb.ID, runtime.Network{Egress: "none"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the runtime's policy restored", func() bool {
		in, err := e.rt.Get(ctx, sb.ID)
		return err == nil && in.Network.Equal(openNet)
	})
	if out, ok := e.reach(t, "t1", sb.ID, "echo", "203.0.113.20", "7000"); !ok {
		t.Fatalf("after the reconciler: %s", out)
	}
}

// TestImageNetwork: a sandbox of an image that brings no resolver
// configuration resolves and reaches names as its policy allows (its
// template's skeleton layer names sandpool's resolver), and a Dockerfile's
// RUN steps run under the template's network. (Not wget -T: this busybox's
// crashes with it.)
func TestImageNetwork(t *testing.T) {
	images, err := image.Open(image.StoreConfig{Dir: filepath.Join(t.TempDir(), "images")})
	if err != nil {
		t.Fatal(err)
	}
	e := newNetEnv(t, sandbox.Config{Images: images})
	ctx := context.Background()
	host := busyboxRegistry(t)
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "bb", Image: &sandbox.ImageSource{Ref: host + "/busybox:1"}}); err != nil {
		t.Fatal(err)
	}
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "bb", Network: &openNet})
	if out, st := e.run(t, "a", sb.ID, "cat /etc/resolv.conf; nslookup allowed.test; wget -q -O- http://allowed.test/"); st.Code != 0 ||
		!strings.Contains(out, image.ResolvConf) || !strings.Contains(out, "198.51.100.10") || !strings.Contains(out, "host=allowed.test") {
		t.Fatalf("an image sandbox with egress open: %d\n%s", st.Code, out)
	}
	off := e.create(t, "a", sandbox.CreateRequest{Template: "bb", Network: &noneNet})
	if out, st := e.run(t, "a", off.ID, "wget -q -O- http://allowed.test/"); st.Code == 0 {
		t.Fatalf("an image sandbox with egress none got out: %s", out)
	}

	// RUN under the template's network: open reaches, none does not (the
	// build fails with the step's output).
	df := it.Tar(t, it.File("Dockerfile", "FROM "+host+"/busybox:1\nRUN wget -q -O /fetched http://allowed.test/\n", 0o644))
	tpl, out, err := build(t, e, sandbox.BuildRequest{Name: "fetched", Hooks: sandbox.Hooks{Network: &openNet}}, df)
	if err != nil {
		t.Fatalf("build with egress open: %v\n%s", err, out)
	}
	got := e.create(t, "a", sandbox.CreateRequest{Template: tpl.Name, Network: &noneNet})
	if out, st := e.run(t, "a", got.ID, "cat /fetched; cat /etc/resolv.conf"); st.Code != 0 || !strings.Contains(out, "host=allowed.test") {
		t.Fatalf("what RUN fetched: %d %s", st.Code, out)
	}
	if _, out, err := build(t, e, sandbox.BuildRequest{Name: "offline", NoCache: true, Hooks: sandbox.Hooks{Network: &noneNet}}, df); !errors.Is(err, errdefs.ErrFailed) {
		t.Fatalf("build with egress none: %v\n%s", err, out)
	}
	for _, id := range []string{sb.ID, off.ID, got.ID} {
		if err := e.svc.Delete(ctx, "a", id); err != nil {
			t.Fatal(err)
		}
	}
}
