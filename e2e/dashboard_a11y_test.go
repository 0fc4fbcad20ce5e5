package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sandpool/sandpool/client"
)

// axeViolation is one rule axe-core found broken on a page.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

const axeRun = `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(v => ({
  id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))})))`

// TestDashboardAccessibility runs axe-core (the checker browsers' own
// audits use) in every page of the dashboard, signed in as a tenant and as
// an admin, and on a phone-sized screen: labels, landmarks, headings,
// names of buttons and links, contrast, ARIA. Any violation fails.
func TestDashboardAccessibility(t *testing.T) {
	npmInstall(t, "axe")
	axeJS, err := os.ReadFile(filepath.Join("axe", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "")
	ctx := context.Background()
	k, err := s.client("").CreateKey(ctx, "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	acme := s.client(k.Secret)
	sb, err := acme.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Timeout: 600, Metadata: map[string]string{"owner": "ada"}})
	if err != nil {
		t.Fatal(err)
	}
	deleteAtEnd(t, acme, &[]string{sb.ID})
	if _, err := acme.WriteFile(ctx, sb.ID, "/home/user/data.csv", strings.NewReader("a,b\n"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.CreatePool(ctx, client.PoolConfig{Name: "web", Template: "base", MinIdle: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = acme.DeletePool(context.Background(), "web") })

	check := func(tab context.Context, path string) {
		t.Helper()
		do(t, tab, 30*time.Second, "open "+path, chromedp.Navigate(s.url+path), chromedp.WaitVisible(chromedp.ID("main")))
		if !run(t, tab, "load axe", chromedp.Evaluate[bool](string(axeJS)+";typeof axe === 'object'")) {
			t.Fatal("axe did not load")
		}
		found := run(t, tab, "axe on "+path, chromedp.Evaluate[[]axeViolation](axeRun, chromedp.EvalAwaitPromise))
		for _, v := range found {
			t.Errorf("%s: %s (%s): %s at %v", path, v.ID, v.Impact, v.Help, v.Nodes)
		}
	}
	tab := newBrowser(t, 1280, 860)
	check(tab, "/ui/signin")
	signInBrowser(t, tab, s.url, k.Secret)
	for _, p := range []string{"/ui/", "/ui/sandboxes", "/ui/sandboxes/" + sb.ID, "/ui/pools", "/ui/events",
		"/ui/sandboxes?status=sleepy", "/ui/templates"} { // the last two: an error page, the admin-only one
		check(tab, p)
	}
	admin := newTab(t, tab)
	signInBrowser(t, admin, s.url, s.adminKey)
	for _, p := range []string{"/ui/", "/ui/templates", "/ui/keys", "/ui/nodes"} {
		check(admin, p)
	}
	phone := newTab(t, tab)
	do(t, phone, 10*time.Second, "a phone's screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	signInBrowser(t, phone, s.url, k.Secret)
	for _, p := range []string{"/ui/sandboxes", "/ui/sandboxes/" + sb.ID, "/ui/pools"} {
		check(phone, p)
	}
}
