package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store"
)

func TestTemplateHooks(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	if _, err := e.svc.DefineTemplate(ctx, "tool", "base", sandbox.Hooks{
		Setup:        "mkdir -p /opt/tool && echo v1 > /opt/tool/version",
		SessionSetup: "echo $GREETING > /tmp/session"}); err != nil {
		t.Fatal(err)
	}
	// Defined on a defined template: its hooks are inherited.
	if _, err := e.svc.DefineTemplate(ctx, "tool2", "tool", sandbox.Hooks{SessionTeardown: "true"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tool", "tool2"} {
		sb := e.create(t, "a", sandbox.CreateRequest{Template: name, Env: map[string]string{"GREETING": "hi"}})
		if sb.Template != name {
			t.Fatalf("template %q", sb.Template)
		}
		if out, _ := e.run(t, "a", sb.ID, "cat /opt/tool/version /tmp/session"); out != "v1\nhi\n" {
			t.Fatalf("%s: hooks' work: %q", name, out)
		}
	}
	list, err := e.svc.Templates(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("templates: %+v %v", list, err)
	}
	for _, tpl := range list {
		if tpl.Name == "tool2" && (tpl.From != "base" || tpl.Hooks.Setup == "" || tpl.Hooks.SessionTeardown != "true") {
			t.Fatalf("tool2: %+v", tpl)
		}
	}
	// Bad definitions.
	for _, tc := range []struct{ name, from string }{{"tool", "base"}, {"base", "tool"}, {"x", "nope"}, {"", "base"}} {
		if _, err := e.svc.DefineTemplate(ctx, tc.name, tc.from, sandbox.Hooks{}); err == nil {
			t.Errorf("define %q from %q accepted", tc.name, tc.from)
		}
	}
	if err := e.svc.DeleteTemplate(ctx, "base"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("delete base while tool uses it: %v", err)
	}
	if err := e.svc.DeleteTemplate(ctx, "tool2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "tool2"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("create from a deleted template: %v", err)
	}
}

// A failing setup fails the create with its output, and leaves nothing.
func TestFailingSetup(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	if _, err := e.svc.DefineTemplate(ctx, "broken", "base", sandbox.Hooks{Setup: "echo cannot install >&2; exit 3"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "broken"})
	if err == nil || !strings.Contains(err.Error(), "setup failed (exit status 3): cannot install") {
		t.Fatalf("create: %v", err)
	}
	// A failed setup is the template's failure, not an internal error:
	// the API answers 422 setup_failed.
	var he *sandbox.HookError
	if !errors.Is(err, sandbox.ErrSetupFailed) || !errors.Is(err, errdefs.ErrFailed) || !errors.As(err, &he) ||
		he.Hook != "setup" || he.Output != "cannot install" {
		t.Fatalf("create error %#v is not a setup failure", err)
	}
	rows, _ := e.st.ListSandboxes(ctx, store.Filter{Statuses: []string{"failed"}})
	if len(rows) != 1 || !strings.Contains(rows[0].Error, "cannot install") {
		t.Fatalf("failed rows: %+v", rows)
	}
	if infos, _ := e.rt.List(ctx); len(infos) != 0 {
		t.Fatalf("%d sandboxes left in the runtime", len(infos))
	}
	if left := linuxtest.Leftovers(e.rt.DataDir(), []string{rows[0].ID}); len(left) > 0 {
		t.Fatalf("left: %v", left)
	}
}

// A template added with build runs its setup once, now, with its output
// streamed; one whose setup fails is refused with the tail of its output
// and leaves nothing behind.
func TestAddTemplateBuild(t *testing.T) {
	e := newEnv(t, sandbox.Config{})
	ctx := context.Background()
	var out strings.Builder
	tpl, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "good", From: "base", Build: true, Progress: &out,
		Hooks: sandbox.Hooks{Setup: "echo installing; echo done >&2"}})
	if err != nil || tpl.Name != "good" || tpl.Hooks.Setup == "" {
		t.Fatalf("build good: %+v %v", tpl, err)
	}
	if !strings.Contains(out.String(), "installing") || !strings.Contains(out.String(), "done") {
		t.Fatalf("build output %q", out.String())
	}
	out.Reset()
	_, err = e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "bad", From: "base", Build: true, Progress: &out,
		Hooks: sandbox.Hooks{Setup: "for i in $(seq 3000); do echo line $i; done >&2; echo pip: no network >&2; exit 1"}}) // one stream: its order is kept
	var he *sandbox.HookError
	if !errors.As(err, &he) || !strings.HasSuffix(he.Output, "pip: no network") || len(he.Output) > 2100 {
		t.Fatalf("build bad: %v", err)
	}
	if !strings.Contains(out.String(), "line 1\n") {
		t.Fatal("the failing build's output did not stream")
	}
	if _, err := e.svc.Template(ctx, "bad"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a template whose build failed is kept: %v", err)
	}
	// The build sandboxes are gone, on both counts.
	if infos, _ := e.rt.List(ctx); len(infos) != 0 {
		t.Fatalf("%d build sandboxes left in the runtime", len(infos))
	}
	// Neither source nor two at once.
	if _, err := e.svc.AddTemplate(ctx, sandbox.TemplateRequest{Name: "x"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("no source: %v", err)
	}
}
