package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/sandpool/sandpool/client"
)

// deleteAtEnd deletes sandboxes through the API when the test ends,
// before the server stops (sandboxes outlive their server by design).
func deleteAtEnd(t *testing.T, c *client.Client, ids *[]string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, id := range *ids {
			if err := c.DeleteSandbox(ctx, id); err != nil {
				t.Errorf("delete %s: %v", id, err)
			}
		}
	})
}

// TestDashboard drives the dashboard in Chromium as a tenant would: sign
// in, watch a sandbox made through the API appear, move files both ways,
// change a pool and watch it follow; then as a second tenant, who sees
// none of it; and checks that requests without the session cookie or the
// CSRF token are refused. It takes the README's screenshots on the way.
func TestDashboard(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	admin := s.client("")
	k, err := admin.CreateKey(ctx, "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	acme := s.client(k.Secret)
	var ids []string
	deleteAtEnd(t, acme, &ids)
	shots := screenshotDir(t)

	tab := newBrowser(t, 1280, 860)
	do(t, tab, 30*time.Second, "open the sign-in page", chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("key")))
	screenshot(t, tab, shots, "signin")
	signInBrowser(t, tab, s.url, k.Secret)

	// The key is not kept in the browser: the only cookie is the session's,
	// HttpOnly and SameSite=Strict, and the page's storage is empty.
	cookies := run(t, tab, "read cookies", func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	})
	if len(cookies) != 1 || cookies[0].Name != "sandpool_session" || !cookies[0].HTTPOnly ||
		cookies[0].SameSite != network.CookieSameSiteStrict || strings.Contains(cookies[0].Value, k.Secret) {
		t.Fatalf("cookies after sign-in: %+v", cookies)
	}
	if n := run(t, tab, "storage", chromedp.Evaluate[int](`localStorage.length + sessionStorage.length + document.cookie.length`)); n != 0 {
		t.Fatalf("the page can read %d bytes of stored state; want none", n)
	}

	// A sandbox made through the API appears without a reload.
	do(t, tab, 30*time.Second, "open the sandboxes page", chromedp.Navigate(s.url+"/ui/sandboxes"))
	waitJS(t, tab, 10*time.Second, "live updates on", `document.getElementById("live-state").textContent.includes("on")`)
	do(t, tab, 5*time.Second, "mark the page", chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	sb, err := acme.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Timeout: 600, Metadata: map[string]string{"owner": "ada"}})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, sb.ID)
	waitJS(t, tab, 15*time.Second, "the new sandbox's row", `!!document.querySelector("#sb-`+sb.ID+` .s-running")`)
	if !run(t, tab, "the same page", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the page was reloaded")
	}
	for range 2 { // two more for the screenshot
		more, err := acme.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Timeout: 300, Metadata: map[string]string{"owner": "grace"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, more.ID)
		waitJS(t, tab, 15*time.Second, "another row", `!!document.querySelector("#sb-`+more.ID+` .s-running")`)
	}
	if _, err := acme.Pause(ctx, ids[2], false); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, 15*time.Second, "the paused row", `!!document.querySelector("#sb-`+ids[2]+` .s-paused")`)
	waitJS(t, tab, 15*time.Second, "the summary", `document.getElementById("sb-summary").textContent.includes("3 sandboxes: 2 running, 1 paused")`)
	screenshot(t, tab, shots, "sandboxes")

	// Upload a file from the browser and read it through the API.
	local := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(local, []byte("uploaded from Chromium\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, tab, 30*time.Second, "upload a file",
		chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID),
		chromedp.WaitVisible(chromedp.ID("upload-file")),
		chromedp.SetUploadFiles(chromedp.ID("upload-file"), []string{local}),
		chromedp.Click(chromedp.CSS(`.upload button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.ok`)),
	)
	rc, err := acme.ReadFile(ctx, sb.ID, "/home/user/notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "uploaded from Chromium\n" {
		t.Fatalf("the uploaded file holds %q", got)
	}

	// Download a file written through the API, with the browser.
	if _, err := acme.WriteFile(ctx, sb.ID, "/home/user/report.csv", strings.NewReader("a,b\n1,2\n"), client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	downloads := t.TempDir()
	dctx, cancel := context.WithTimeout(tab, time.Minute)
	defer cancel()
	progress := chromedp.Events(dctx, browser.DownloadProgress)
	do(t, tab, 30*time.Second, "download a file",
		chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID+"?path=/home/user"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true)})
			return err
		}),
		chromedp.Click(chromedp.CSS(`a[aria-label="Download report.csv"]`)),
	)
	var guid string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("download %s", ev.State)
		}
	}
	if b, err := os.ReadFile(filepath.Join(downloads, guid)); err != nil || string(b) != "a,b\n1,2\n" {
		t.Fatalf("downloaded %q, %v", b, err)
	}

	// A command in the terminal, and its output on the page.
	do(t, tab, 30*time.Second, "open the terminal",
		chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID),
		chromedp.Click(chromedp.ID("terminal-open")),
		chromedp.WaitVisible(chromedp.CSS("#terminal .xterm-helper-textarea")),
	)
	waitJS(t, tab, 15*time.Second, "the terminal connected", `document.getElementById("terminal-state").textContent === "Connected."`)
	waitJS(t, tab, 15*time.Second, "the shell's prompt", `document.querySelector("#terminal .xterm-rows").textContent.includes("$")`)
	do(t, tab, 15*time.Second, "type a command", chromedp.SendKeys(chromedp.CSS("#terminal .xterm-helper-textarea"), "echo $((6*7))-from-the-terminal\r"))
	waitJS(t, tab, 15*time.Second, "the command's output", `document.querySelector("#terminal .xterm-rows").textContent.includes("42-from-the-terminal")`)
	if os.Getenv("SANDPOOL_SCREENSHOTS") == "1" { // something for the charts to show
		do(t, tab, 15*time.Second, "keep the CPU busy", chromedp.SendKeys(chromedp.CSS("#terminal .xterm-helper-textarea"),
			"python3 -c 'import time; x = bytearray(48 << 20); t = time.time() + 4\nwhile time.time() < t: pass'; ls -l\r"))
		time.Sleep(9 * time.Second)
	}
	screenshot(t, tab, shots, "sandbox")

	// Change a pool's min idle and watch the idle count follow.
	if _, err := acme.CreatePool(ctx, client.PoolConfig{Name: "web", Template: "base", MinIdle: 1, MaxIdle: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = acme.DeletePool(context.Background(), "web") }) // its sandboxes go with it, before the server stops
	do(t, tab, 30*time.Second, "open the pools page", chromedp.Navigate(s.url+"/ui/pools"), chromedp.WaitVisible(chromedp.ID("pool-web-min")))
	waitJS(t, tab, 30*time.Second, "one idle", `document.querySelector('#pool-web-live [data-count=idle]').textContent === "1"`)
	do(t, tab, 30*time.Second, "set min idle to 3",
		chromedp.SetValue(chromedp.ID("pool-web-min"), "3"),
		chromedp.SetValue(chromedp.ID("pool-web-max"), "3"),
		chromedp.Submit(chromedp.ID("pool-web-min")),
		chromedp.WaitVisible(chromedp.ID("pool-web-live")),
	)
	waitJS(t, tab, 10*time.Second, "live updates on the pools page", `document.getElementById("live-state").textContent.includes("on")`)
	do(t, tab, 5*time.Second, "mark the page", chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	waitJS(t, tab, 60*time.Second, "three idle", `document.querySelector('#pool-web-live [data-count=idle]').textContent === "3" && window.notReloaded`)
	if p, err := acme.GetPool(ctx, "web"); err != nil || p.MinIdle != 3 {
		t.Fatalf("pool after the edit: %+v %v", p, err)
	}
	screenshot(t, tab, shots, "pools")

	do(t, tab, 30*time.Second, "open the events", chromedp.Navigate(s.url+"/ui/events"), chromedp.WaitVisible(chromedp.CSS("#event-rows tr")))
	screenshot(t, tab, shots, "events")

	// Requests without the session cookie, or without the CSRF token, are
	// refused and change nothing.
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(cookie *http.Cookie, form url.Values) int {
		req, _ := http.NewRequest("POST", s.url+"/ui/sandboxes/"+sb.ID+"/delete", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	session := &http.Cookie{Name: cookies[0].Name, Value: cookies[0].Value}
	token := run(t, tab, "read the CSRF token", chromedp.Evaluate[string](`document.getElementById("main").dataset.csrf`))
	if code := post(nil, url.Values{"csrf": {token}}); code != http.StatusUnauthorized {
		t.Errorf("delete without the session cookie: %d, want 401", code)
	}
	if code := post(session, url.Values{}); code != http.StatusForbidden {
		t.Errorf("delete without the CSRF token: %d, want 403", code)
	}
	if got, err := acme.GetSandbox(ctx, sb.ID); err != nil || got.Status != "running" {
		t.Fatalf("after refused deletes: %+v %v", got, err)
	}

	// A second tenant, in a browser of its own, sees none of it.
	k2, err := admin.CreateKey(ctx, "beta", false)
	if err != nil {
		t.Fatal(err)
	}
	beta := newTab(t, tab)
	signInBrowser(t, beta, s.url, k2.Secret)
	for _, p := range []string{"/ui/", "/ui/sandboxes?status=all", "/ui/pools", "/ui/events"} {
		do(t, beta, 30*time.Second, "beta opens "+p, chromedp.Navigate(s.url+p), chromedp.WaitVisible(chromedp.ID("main")))
		html := run(t, beta, "read "+p, chromedp.OuterHTML(chromedp.CSS("main")))
		for _, id := range append(ids, "web") {
			if strings.Contains(html, id) {
				t.Errorf("beta sees %s on %s", id, p)
			}
		}
	}
	do(t, beta, 30*time.Second, "beta opens acme's sandbox", chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID), chromedp.WaitVisible(chromedp.CSS(".problem")))
	if text := run(t, beta, "read the page", chromedp.Text(chromedp.CSS(".problem"))); !strings.Contains(text, "404") {
		t.Errorf("beta on acme's sandbox: %q", text)
	}
	// Live: a sandbox of acme's made now does not reach beta's page; one of
	// beta's own does.
	do(t, beta, 30*time.Second, "beta's sandboxes", chromedp.Navigate(s.url+"/ui/sandboxes"))
	waitJS(t, beta, 10*time.Second, "live updates on", `document.getElementById("live-state").textContent.includes("on")`)
	late, err := acme.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, late.ID)
	betaC := s.client(k2.Secret)
	own, err := betaC.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	deleteAtEnd(t, betaC, &[]string{own.ID})
	waitJS(t, beta, 15*time.Second, "beta's own sandbox", `!!document.getElementById("sb-`+own.ID+`")`)
	if run(t, beta, "acme's row", chromedp.Evaluate[bool](`!!document.getElementById("sb-`+late.ID+`")`)) {
		t.Error("beta's page shows acme's new sandbox")
	}

	// An admin's overview (capacity and memory) and the keys, for the
	// README.
	var adminIDs []string
	deleteAtEnd(t, admin, &adminIDs)
	for range 2 {
		sb, err := admin.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		adminIDs = append(adminIDs, sb.ID)
	}
	adminTab := newTab(t, tab)
	signInBrowser(t, adminTab, s.url, s.adminKey)
	do(t, adminTab, 30*time.Second, "the overview", chromedp.Navigate(s.url+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#overview-body meter")))
	screenshot(t, adminTab, shots, "overview")
	do(t, adminTab, 30*time.Second, "keys", chromedp.Navigate(s.url+"/ui/keys"), chromedp.WaitVisible(chromedp.ID("k-tenant")))
	screenshot(t, adminTab, shots, "keys")

	// A phone-sized window: one column, still usable.
	phone := newTab(t, tab)
	do(t, phone, 10*time.Second, "a phone's screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	signInBrowser(t, phone, s.url, k.Secret)
	do(t, phone, 30*time.Second, "sandbox on a phone", chromedp.Navigate(s.url+"/ui/sandboxes/"+sb.ID), chromedp.WaitVisible(chromedp.ID("sb-head")))
	if w := run(t, phone, "page width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
		t.Errorf("the sandbox page is %d px wide on a 390 px screen: it scrolls sideways", w)
	}
	screenshot(t, phone, shots, "phone")
}

// TestDashboardShutdown: a page's live stream does not hold up the
// server's stop.
func TestDashboardShutdown(t *testing.T) {
	s := startServer(t, "")
	jar := &cookieJar{}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(s.url+"/ui/signin", url.Values{"key": {s.adminKey}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	live, err := c.Get(s.url + "/ui/live?view=events")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	if live.StatusCode != http.StatusOK {
		t.Fatalf("live: %d", live.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, live.Body)
		ended <- err
	}()
	start := time.Now()
	s.stop()
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("stopping with a live page open took %v", took)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the live stream did not end with the server")
	}
}

// cookieJar keeps cookies for one server, whatever their path.
type cookieJar struct{ cookies []*http.Cookie }

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) { j.cookies = append(j.cookies, cs...) }
func (j *cookieJar) Cookies(*url.URL) []*http.Cookie          { return j.cookies }
