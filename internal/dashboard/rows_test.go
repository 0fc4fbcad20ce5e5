package dashboard

import (
	"bytes"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// rowTemplate is the row as a template, the reference rows.go follows.
func rowTemplate(t testing.TB) *template.Template {
	t.Helper()
	tpl, err := template.New("row").Funcs(funcs).ParseFiles("testdata/sandbox-row.html")
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

// dom parses a row and lists what a browser would see in it: elements
// with their attributes (sorted), and text.
func dom(t testing.TB, s string) []string {
	t.Helper()
	nodes, err := html.ParseFragment(strings.NewReader(s), &html.Node{Type: html.ElementNode, Data: "div", DataAtom: atom.Div})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		switch n.Type {
		case html.ElementNode:
			var attrs []string
			for _, a := range n.Attr {
				attrs = append(attrs, a.Key+"="+a.Val)
			}
			slices.Sort(attrs)
			out = append(out, "<"+n.Data+" "+strings.Join(attrs, " ")+">")
		case html.TextNode:
			out = append(out, "text:"+n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
		if n.Type == html.ElementNode {
			out = append(out, "</"+n.Data+">")
		}
	}
	for _, n := range nodes {
		walk(n)
	}
	return out
}

func checkRow(t *testing.T, tpl *template.Template, r sbRow) {
	t.Helper()
	var want bytes.Buffer
	if err := tpl.ExecuteTemplate(&want, "sandbox-row-template", r); err != nil {
		t.Fatal(err)
	}
	got := string(sandboxRow(r))
	if g, w := dom(t, got), dom(t, want.String()); !slices.Equal(g, w) {
		t.Fatalf("row differs from the template's\n got: %q\nwant: %q", g, w)
	}
}

func TestSandboxRowMatchesTemplate(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now = func() time.Time { return at }
	t.Cleanup(func() { now = time.Now })
	tpl := rowTemplate(t)
	later := at.Add(290 * time.Second)
	left := 75.0
	for _, r := range []sbRow{
		{SB: sandbox.Sandbox{ID: "sb_1", Status: "running", Template: "base", NodeName: "n1", CreatedAt: at, Timeout: 300, TimesOutAt: &later,
			Metadata: map[string]string{"owner": "ada", "b": "<script>alert(1)</script>"}}, Here: "n1"},
		{SB: sandbox.Sandbox{ID: "sb_2", Status: "paused", Template: `"><img src=x onerror=alert(1)>`, Pool: "p&q", NodeName: "n1", Timeout: 300, TimeoutLeft: &left}, Here: "n1"},
		{SB: sandbox.Sandbox{ID: "sb_3", Status: "paused", NodeName: "n1"}, Here: ""},
		{SB: sandbox.Sandbox{ID: "sb_4", Status: "ready", NodeName: "n2", Timeout: 60}, Here: "n1"},
		{SB: sandbox.Sandbox{ID: "sb_5", Status: "failed", NodeName: "n'1", Metadata: map[string]string{"k": "a'b\"c"}}, Here: "n1"},
	} {
		checkRow(t, tpl, r)
	}
}

// FuzzSandboxRow checks that whatever a tenant puts in its sandboxes'
// metadata (and whatever templates, pools and nodes are called), the row
// written in Go means what the template's row means.
func FuzzSandboxRow(f *testing.F) {
	f.Add("owner", "ada", "base", "web", "n1", "running")
	f.Add("<b>", `"'&><`, "x\x00y", "p+q", "n\u2028", "paused")
	f.Add("a", "javascript:alert(1)", "", "", "", "ready")
	tpl := rowTemplate(f)
	f.Fuzz(func(t *testing.T, k, v, tplName, pool, node, status string) {
		for _, s := range []string{k, v, tplName, pool, node, status} {
			if !utf8Valid(s) || strings.ContainsRune(s, 0) || strings.ContainsRune(s, '\r') {
				return // the store keeps valid text; NUL and CR are changed by any HTML parser
			}
		}
		r := sbRow{SB: sandbox.Sandbox{ID: "sb_x", Status: sandbox.Status(status), Template: tplName, Pool: pool, NodeName: node,
			Metadata: map[string]string{k: v}}, Here: node}
		checkRow(t, tpl, r)
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func BenchmarkSandboxRows(b *testing.B) {
	at := time.Now()
	rows := make([]sbRow, 1000)
	for i := range rows {
		later := at.Add(time.Hour)
		rows[i] = sbRow{SB: sandbox.Sandbox{ID: fmt.Sprintf("sb_06h27a1h2xrtq9b6xk7qan%04d", i), Status: "running", Template: "base",
			Metadata: map[string]string{"team": "perf", "job": fmt.Sprint(i)}, NodeName: "n1", CreatedAt: at, TimesOutAt: &later, Timeout: 3600}, Here: "n1"}
	}
	for b.Loop() {
		_ = sandboxRows(rows)
	}
}
