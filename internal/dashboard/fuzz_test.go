package dashboard

import (
	"maps"
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzLocalPath: whatever a form's "next" says, a redirect stays on the
// dashboard.
func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/ui/", "/ui/sandboxes?status=running", "//evil.example/ui/", "/ui/\\evil", "https://x/ui/", "/ui/%2F%2Fx", "/ui/..//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := localPath(next, "/def")
		if got == "/def" {
			return
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(path.Clean(u.Path)+"/", "/ui/") || strings.HasPrefix(got, "//") ||
			strings.ContainsAny(got, "\\\r\n") {
			t.Fatalf("localPath(%q) = %q leaves the dashboard", next, got)
		}
	})
}

// FuzzParseFilter: a filter read from a query and written back reads the
// same.
func FuzzParseFilter(f *testing.F) {
	f.Add("running", "base", "web", "owner=ada team=x", "2")
	f.Add("all", "", "", "a=b,c=d", "")
	f.Add("", "t", "p", "k=", "1")
	f.Fuzz(func(t *testing.T, status, template, pool, meta, page string) {
		q := url.Values{"status": {status}, "template": {template}, "pool": {pool}, "meta": {meta}, "page": {page}}
		fl, err := parseFilter(q)
		if err != nil {
			return
		}
		back := fl.query()
		back.Set("page", page)
		again, err := parseFilter(back)
		if err != nil {
			t.Fatalf("the filter %+v written back does not read: %v", fl, err)
		}
		if again.Status != fl.Status || again.Template != fl.Template || again.Pool != fl.Pool || again.Page != fl.Page || !maps.Equal(again.meta, fl.meta) {
			t.Fatalf("read %+v, then %+v", fl, again)
		}
	})
}
