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
