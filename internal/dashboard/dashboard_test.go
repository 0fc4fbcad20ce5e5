package dashboard_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandpool/sandpool/internal/dashboard"
	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/keys"
	"github.com/sandpool/sandpool/internal/pool"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/sqlstore"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

func TestMain(m *testing.M) { linuxtest.Main(m) }

// env is a dashboard on a real service, pools, keys and SQLite, served
// over HTTP.
type env struct {
	svc   *sandbox.Service
	pools *pool.Manager
	keys  *keys.Keys
	st    *sqlstore.DB
	url   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rt := linuxtest.Open(t)
	st := storetest.SQLite(t)
	ev := events.NewBroker()
	log := slog.New(slog.DiscardHandler)
	svc := sandbox.New(rt, st, ev, sandbox.Config{Node: "n1", Log: log})
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pools := pool.NewManager(svc, st, ev, pool.Options{Node: "n1", Tick: 20 * time.Millisecond, Log: log})
	if err := pools.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ks := keys.New(st)
	dash, err := dashboard.New(svc, pools, ks, dashboard.Config{Node: "n1", SweepEvery: 50 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", dash)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		dash.Close() // ends live streams first: the server waits for them
		srv.Close()
		pools.Close()
		svc.Close()
	})
	return &env{svc: svc, pools: pools, keys: ks, st: st, url: srv.URL}
}

// key makes an API key and returns its secret.
func (e *env) key(t *testing.T, tenant string, admin bool) (keys.Key, string) {
	t.Helper()
	k, err := e.keys.Create(context.Background(), tenant, admin, keys.Native)
	if err != nil {
		t.Fatal(err)
	}
	return k, k.Secret
}

func (e *env) create(t *testing.T, tenant string) sandbox.Sandbox {
	t.Helper()
	sb, err := e.svc.Create(context.Background(), tenant, "", sandbox.CreateRequest{Template: "base", Timeout: 600})
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see them.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
	csrf string
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: e.url, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

var csrfRE = regexp.MustCompile(`data-csrf="([^"]+)"`)

// signIn signs the browser in with secret and reads its CSRF token from a
// page.
func (e *env) signIn(t *testing.T, secret string) *browser {
	t.Helper()
	b := e.browser(t)
	resp := b.send("POST", "/ui/signin", url.Values{"key": {secret}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	_, body := b.get("/ui/")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the overview:\n%s", body)
	}
	b.csrf = m[1]
	return b
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// send posts a form as is (headers added); post adds the session's token.
func (b *browser) send(method, path string, form url.Values, header http.Header) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func (b *browser) post(path string, form url.Values) *http.Response {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", b.csrf)
	return b.send("POST", path, form, nil)
}

func bodyOf(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within %v: %s", d, what)
}

func TestSignInOut(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	b := e.browser(t)

	resp, _ := b.get("/ui/sandboxes?status=running")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/signin?next=%2Fui%2Fsandboxes%3Fstatus%3Drunning" {
		t.Fatalf("signed out page: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = b.send("POST", "/ui/signin", url.Values{"key": {"spk_nope"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(bodyOf(resp), "unknown or revoked") {
		t.Fatalf("bad key: %d", resp.StatusCode)
	}
	resp = b.send("POST", "/ui/signin", url.Values{"key": {secret}, "next": {"https://evil.example/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign in: %d %q (a next page off the dashboard must be ignored)", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || strings.Contains(c.Value, secret) || c.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, an expiry, and no key in it", c)
	}
	resp, body := b.get("/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<strong>acme</strong>") || strings.Contains(body, secret) {
		t.Fatalf("overview: %d, tenant shown and key not: %s", resp.StatusCode, body)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token")
	}
	b.csrf = m[1]
	if resp := b.send("POST", "/ui/signout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign out without the token: %d", resp.StatusCode)
	}
	if resp := b.post("/ui/signout", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	// The old cookie is worthless now, even sent again by hand.
	req, _ := http.NewRequest("GET", e.url+"/ui/", nil)
	req.AddCookie(c)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out, the old session: %d", resp.StatusCode)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	sb := e.create(t, "acme")
	b := e.signIn(t, secret)
	other := e.signIn(t, secret) // the same key, another session: another token
	if other.csrf == b.csrf {
		t.Fatal("two sessions got the same CSRF token")
	}
	path := "/ui/sandboxes/" + sb.ID + "/pause"
	for name, tc := range map[string]struct {
		form   url.Values
		header http.Header
	}{
		"no token":             {form: url.Values{}},
		"wrong token":          {form: url.Values{"csrf": {"x"}}},
		"another session's":    {form: url.Values{"csrf": {other.csrf}}},
		"from another site":    {form: url.Values{"csrf": {b.csrf}}, header: http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		"from another origin":  {form: url.Values{"csrf": {b.csrf}}, header: http.Header{"Origin": {"https://evil.example"}}},
		"token in a bad place": {form: url.Values{"csrf ": {b.csrf}}},
	} {
		resp := b.send("POST", path, tc.form, tc.header)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(bodyOf(resp), "Request refused") {
			t.Errorf("%s: %d, want 403 with a page that says so", name, resp.StatusCode)
		}
	}
	if got, _ := e.svc.Get(context.Background(), "acme", sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("a refused request changed the sandbox: %s", got.Status)
	}
	// Without a session at all: refused too (401, not a redirect, for a POST).
	anon := e.browser(t)
	if resp := anon.send("POST", path, url.Values{"csrf": {b.csrf}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no session: %d", resp.StatusCode)
	}
	// The header works as well as the field.
	resp := b.send("POST", path, url.Values{}, http.Header{"X-Csrf-Token": {b.csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("pause with the token: %d %s", resp.StatusCode, bodyOf(resp))
	}
	if got, _ := e.svc.Get(context.Background(), "acme", sb.ID); got.Status != sandbox.StatusPaused {
		t.Fatalf("after pause: %s", got.Status)
	}
	// The list's form: the button pressed names the action, its value the
	// sandbox; the token in the header, the form read all the same.
	resp = b.send("POST", "/ui/sandboxes/act", url.Values{"resume": {sb.ID}, "next": {"/ui/sandboxes?status=running"}}, http.Header{"X-Csrf-Token": {b.csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/sandboxes?status=running" {
		t.Fatalf("resume from the list: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got, _ := e.svc.Get(context.Background(), "acme", sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("after resume: %s", got.Status)
	}
	if resp := b.post("/ui/sandboxes/act", url.Values{}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the list's form without an action: %d", resp.StatusCode)
	}
}

func TestTenancy(t *testing.T) {
	e := newEnv(t)
	_, a := e.key(t, "acme", false)
	_, bKey := e.key(t, "beta", false)
	sb := e.create(t, "acme")
	if _, err := e.pools.Create(context.Background(), "acme", pool.Config{Name: "acmepool", Template: "base", MinIdle: 0, MaxIdle: 1}); err != nil {
		t.Fatal(err)
	}
	acme := e.signIn(t, a)
	if _, body := acme.get("/ui/sandboxes"); !strings.Contains(body, sb.ID) {
		t.Fatal("acme does not see its own sandbox")
	}
	beta := e.signIn(t, bKey)
	for _, p := range []string{"/ui/", "/ui/sandboxes", "/ui/sandboxes?status=all", "/ui/pools", "/ui/events"} {
		resp, body := beta.get(p)
		if resp.StatusCode != http.StatusOK || strings.Contains(body, sb.ID) || strings.Contains(body, "acmepool") {
			t.Errorf("%s: beta sees acme's things (%d)", p, resp.StatusCode)
		}
	}
	if resp, _ := beta.get("/ui/sandboxes/" + sb.ID); resp.StatusCode != http.StatusNotFound {
		t.Errorf("beta opens acme's sandbox: %d", resp.StatusCode)
	}
	for _, p := range []string{"/delete", "/pause", "/files/delete"} {
		if resp := beta.post("/ui/sandboxes/"+sb.ID+p, url.Values{"path": {"/home/user/x"}}); resp.StatusCode != http.StatusNotFound {
			t.Errorf("beta posts %s on acme's sandbox: %d", p, resp.StatusCode)
		}
	}
	if resp := beta.post("/ui/pools/acmepool", url.Values{"min_idle": {"3"}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("beta edits acme's pool: %d", resp.StatusCode)
	}
	if resp, _ := beta.get("/ui/sandboxes/" + sb.ID + "/files/download?path=/etc/hostname"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("beta downloads from acme's sandbox: %d", resp.StatusCode)
	}
	if got, _ := e.svc.Get(context.Background(), "acme", sb.ID); got.Status != sandbox.StatusRunning {
		t.Fatalf("acme's sandbox after beta's attempts: %s", got.Status)
	}
	// Admin pages are for admin keys.
	for _, p := range []string{"/ui/keys", "/ui/templates", "/ui/nodes"} {
		if resp, body := beta.get(p); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Admins only") {
			t.Errorf("%s for a tenant key: %d", p, resp.StatusCode)
		}
	}
	if resp := beta.post("/ui/keys", url.Values{"tenant": {"x"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a tenant key creates keys: %d", resp.StatusCode)
	}
}

// live opens a page's live stream and returns its patches, one by one, as
// they come.
func (b *browser) live(ctx context.Context, query string) <-chan map[string]string {
	b.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/ui/live?"+query, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("live: %d", resp.StatusCode)
	}
	out := make(chan map[string]string, 256)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				var ps []map[string]string
				_ = json.Unmarshal([]byte(v), &ps)
				if event == "signedout" {
					ps = []map[string]string{{"op": "signedout"}}
				}
				for _, p := range ps {
					select {
					case out <- p:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return out
}

// waitPatch reads patches until one matches.
func waitPatch(t *testing.T, ch <-chan map[string]string, what string, match func(map[string]string) bool) map[string]string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatalf("the live stream ended before %s", what)
			}
			if match(p) {
				return p
			}
		case <-timeout:
			t.Fatalf("no live patch: %s", what)
		}
	}
}

func TestLiveSandboxes(t *testing.T) {
	e := newEnv(t)
	_, a := e.key(t, "acme", false)
	_, bKey := e.key(t, "beta", false)
	acme, beta := e.signIn(t, a), e.signIn(t, bKey)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mine := acme.live(ctx, "view=sandboxes&append=1")
	theirs := beta.live(ctx, "view=events")

	sb := e.create(t, "acme")
	p := waitPatch(t, mine, "the new sandbox's row", func(p map[string]string) bool {
		return p["id"] == "sb-"+sb.ID && p["op"] == "upsert" && strings.Contains(p["html"], "s-running")
	})
	if p["parent"] != "sb-rows" {
		t.Fatalf("row patch %v", p)
	}
	waitPatch(t, mine, "the summary", func(p map[string]string) bool {
		return p["id"] == "sb-summary" && strings.Contains(p["html"], "<strong>1</strong>")
	})
	if err := e.svc.Delete(ctx, "acme", sb.ID); err != nil {
		t.Fatal(err)
	}
	waitPatch(t, mine, "the deleted sandbox's row removed", func(p map[string]string) bool {
		return p["id"] == "sb-"+sb.ID && p["op"] == "remove"
	})
	// beta's stream said nothing of it: a sandbox of beta's own comes
	// first on it.
	own := e.create(t, "beta")
	p = waitPatch(t, theirs, "beta's own event", func(p map[string]string) bool { return p["op"] == "prepend" })
	if strings.Contains(p["html"], sb.ID) || !strings.Contains(p["html"], own.ID) {
		t.Fatalf("beta's first event is not its own: %s", p["html"])
	}
}

func TestRevokedKeyEndsSessions(t *testing.T) {
	e := newEnv(t)
	k, secret := e.key(t, "acme", false)
	b := e.signIn(t, secret)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := b.live(ctx, "view=overview")
	// Revoked through another Keys (as on another node): only the
	// dashboard's sweep of the store can notice.
	if err := keys.New(e.st).Revoke(context.Background(), k.ID, "key_admin"); err != nil {
		t.Fatal(err)
	}
	waitPatch(t, stream, "the stream told the session ended", func(p map[string]string) bool { return p["op"] == "signedout" })
	eventually(t, 10*time.Second, "the session ended", func() bool {
		resp, _ := b.get("/ui/")
		return resp.StatusCode == http.StatusSeeOther
	})
}

func TestErrorPages(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	sb := e.create(t, "acme")
	b := e.signIn(t, secret)
	for _, tc := range []struct {
		path   string
		status int
		says   string
	}{
		{"/ui/nothing", http.StatusNotFound, "no such page"},
		{"/ui/sandboxes?status=sleepy", http.StatusUnprocessableEntity, "unknown status"},
		{"/ui/sandboxes?meta=novalue", http.StatusUnprocessableEntity, "want key=value"},
		{"/ui/sandboxes?page=0", http.StatusUnprocessableEntity, "page"},
		{"/ui/sandboxes?page=9", http.StatusNotFound, "page 9"},
		{"/ui/sandboxes/sb_nope", http.StatusNotFound, "no sandbox"},
		{"/ui/sandboxes/" + sb.ID + "?path=../../etc", http.StatusUnprocessableEntity, "not absolute"},
		{"/ui/sandboxes/" + sb.ID + "/files/download?path=/nope", http.StatusNotFound, "Not found"},
		{"/ui/sandboxes/" + sb.ID + "/files/download?path=/root/x", http.StatusForbidden, "Permission denied"},
		{"/ui/live?view=nothing", http.StatusBadRequest, "unknown live view"},
	} {
		resp, body := b.get(tc.path)
		if resp.StatusCode != tc.status || !strings.Contains(strings.ToLower(body), strings.ToLower(tc.says)) || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %q, want %d with a page that says %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.says)
		}
	}
	if resp := b.post("/ui/pools/nopool", url.Values{"min_idle": {"-1"}}); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("a negative min idle: %d", resp.StatusCode)
	}
	if err := e.svc.Delete(context.Background(), "acme", sb.ID); err != nil {
		t.Fatal(err)
	}
	if resp := b.post("/ui/sandboxes/"+sb.ID+"/resume", nil); resp.StatusCode != http.StatusConflict || !strings.Contains(bodyOf(resp), "Not possible now") {
		t.Errorf("resume a stopped sandbox: %d", resp.StatusCode)
	}
}

// upload sends the dashboard's upload form: the token, the directory and
// the file, in that order (as a browser sends the form's fields).
func (b *browser) upload(id, token, dir, name, content string) *http.Response {
	b.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if token != "" {
		mw.WriteField("csrf", token)
	}
	mw.WriteField("dir", dir)
	fw, _ := mw.CreateFormFile("file", name)
	io.WriteString(fw, content)
	mw.Close()
	req, _ := http.NewRequest("POST", b.base+"/ui/sandboxes/"+id+"/files/upload", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestFiles(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	sb := e.create(t, "acme")
	b := e.signIn(t, secret)
	if resp := b.upload(sb.ID, "", "/home/user", "a.txt", "nope"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upload without the token: %d", resp.StatusCode)
	}
	if resp := b.upload(sb.ID, "forged", "/home/user", "a.txt", "nope"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upload with a wrong token: %d", resp.StatusCode)
	}
	resp := b.upload(sb.ID, b.csrf, "/home/user", "../a b.txt", "hello from the browser\n")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "uploaded=a+b.txt") {
		t.Fatalf("upload: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	fs, err := e.svc.Files(context.Background(), "acme", sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	info, err := fs.Stat(context.Background(), "/home/user/a b.txt", fsys.Options{})
	if err != nil || info.Size != int64(len("hello from the browser\n")) || info.Owner != 1000 {
		t.Fatalf("uploaded file: %+v %v (want it in /home/user, owned by the sandbox's user)", info, err)
	}
	_, page := b.get("/ui/sandboxes/" + sb.ID + "?path=/home/user")
	if !strings.Contains(page, "a b.txt") {
		t.Fatal("the file browser does not list the upload")
	}
	resp, body := b.get("/ui/sandboxes/" + sb.ID + "/files/download?path=" + url.QueryEscape("/home/user/a b.txt"))
	if resp.StatusCode != http.StatusOK || body != "hello from the browser\n" || !strings.Contains(resp.Header.Get("Content-Disposition"), `attachment; filename="a b.txt"`) {
		t.Fatalf("download: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Disposition"))
	}
	if resp := b.post("/ui/sandboxes/"+sb.ID+"/files/delete", url.Values{"path": {"/home/user/a b.txt"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if _, err := fs.Stat(context.Background(), "/home/user/a b.txt", fsys.Options{}); err == nil {
		t.Fatal("the deleted file is still there")
	}
}

func TestPoolEdit(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	if _, err := e.pools.Create(context.Background(), "acme", pool.Config{Name: "web", Template: "base", MinIdle: 0, MaxIdle: 0}); err != nil {
		t.Fatal(err)
	}
	b := e.signIn(t, secret)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := b.live(ctx, "view=pools")
	if resp := b.post("/ui/pools/web", url.Values{"min_idle": {"2"}, "max_idle": {"2"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("edit: %d %s", resp.StatusCode, bodyOf(resp))
	}
	waitPatch(t, stream, "two idle", func(p map[string]string) bool {
		return p["id"] == "pool-web-live" && strings.Contains(p["html"], `data-count="idle">2<`)
	})
	if resp := b.post("/ui/pools/web/drain", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("drain: %d", resp.StatusCode)
	}
	waitPatch(t, stream, "the pool gone", func(p map[string]string) bool { return p["id"] == "pool-web" && p["op"] == "remove" })
}

// dialTerminal opens a sandbox's terminal socket as the browser would
// (its cookie; an Origin header if given).
func (b *browser) dialTerminal(ctx context.Context, id, origin string) (*websocket.Conn, *http.Response, error) {
	u, _ := url.Parse(b.base + "/ui/")
	h := http.Header{}
	for _, c := range b.c.Jar.Cookies(u) {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(b.base, "http")+"/ui/sandboxes/"+id+"/terminal", &websocket.DialOptions{HTTPHeader: h})
}

func TestTerminal(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	_, other := e.key(t, "beta", false)
	sb := e.create(t, "acme")
	b := e.signIn(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Another origin's page cannot open it, nor another tenant, nor a page
	// without the session's token.
	if _, resp, err := b.dialTerminal(ctx, sb.ID, "https://evil.example"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-origin terminal: %v %v", resp, err)
	}
	if _, resp, err := e.signIn(t, other).dialTerminal(ctx, sb.ID, ""); err == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another tenant's terminal: %v %v", resp, err)
	}
	c, _, err := b.dialTerminal(ctx, sb.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Write(ctx, websocket.MessageText, []byte(`{"csrf":"forged","rows":24,"cols":80}`))
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("a forged token: %v", err)
	}

	c, _, err = b.dialTerminal(ctx, sb.ID, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Write(ctx, websocket.MessageText, []byte(`{"csrf":"`+b.csrf+`","rows":24,"cols":80}`))
	c.Write(ctx, websocket.MessageText, []byte(`{"rows":30,"cols":100}`))
	c.Write(ctx, websocket.MessageBinary, []byte("stty size; tty; echo $((6*7))x\r"))
	var out strings.Builder
	for !strings.Contains(out.String(), "42x") || !strings.Contains(out.String(), "30 100") {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("terminal output so far %q: %v", out.String(), err)
		}
		if typ == websocket.MessageBinary {
			out.Write(msg)
		}
	}
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Fatalf("the shell has no terminal: %q", out.String())
	}
	// Its process is listed with its tag while it runs; exit closes the socket.
	procs, err := e.svc.Processes(ctx, "acme", sb.ID)
	if err != nil || !slices.ContainsFunc(procs, func(p proc.Info) bool { return p.Running && p.PTY }) {
		t.Fatalf("processes: %+v %v", procs, err)
	}
	c.Write(ctx, websocket.MessageBinary, []byte("exit 3\r"))
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("after exit: %v", err)
			}
			break
		}
	}
	eventually(t, 10*time.Second, "the shell gone", func() bool {
		procs, _ := e.svc.Processes(ctx, "acme", sb.ID)
		return !slices.ContainsFunc(procs, func(p proc.Info) bool { return p.Running })
	})
}

func TestLiveSandboxPage(t *testing.T) {
	e := newEnv(t)
	_, secret := e.key(t, "acme", false)
	sb := e.create(t, "acme")
	b := e.signIn(t, secret)
	resp, page := b.get("/ui/sandboxes/" + sb.ID)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="chart-mem"`) || !strings.Contains(page, `id="terminal-open"`) {
		t.Fatalf("sandbox page: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := b.live(ctx, "view=sandbox&id="+sb.ID)
	// Measured while the page is open.
	waitPatch(t, stream, "the charts", func(p map[string]string) bool {
		return p["id"] == "metrics" && strings.Count(p["html"], "<polyline") == 3
	})
	if _, err := e.svc.Pause(ctx, "acme", sb.ID, sandbox.PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPatch(t, stream, "the pause in the history", func(p map[string]string) bool {
		return p["op"] == "prepend" && p["parent"] == "history-rows" && strings.Contains(p["html"], "s-paused")
	})
	waitPatch(t, stream, "the head paused, with a resume button", func(p map[string]string) bool {
		return p["id"] == "sb-head" && strings.Contains(p["html"], "/resume")
	})
	waitPatch(t, stream, "the files hidden while paused", func(p map[string]string) bool {
		return p["id"] == "files" && strings.Contains(p["html"], "paused")
	})
}
