package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser tests drive the real dashboard in headless Chromium (Debian's
// chromium package; .ci/run installs it). Nothing downloads a browser.

// chromiumPath finds the browser: Debian's binary itself (its
// /usr/bin/chromium is a wrapper script), else one on PATH.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err == nil {
		return "/usr/lib/chromium/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	tb.Fatal("browser tests need Chromium: apt-get install chromium (.ci/run installs it)")
	return ""
}

// newBrowser starts a headless Chromium with a window of width x height
// and returns a tab's context; it is closed when the test ends.
func newBrowser(tb testing.TB, width, height int) context.Context {
	tb.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(tb)),
		chromedp.NoSandbox, // as root, Chromium's own sandbox cannot start
		chromedp.WindowSize(width, height),
		chromedp.Flag("lang", "en-US"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, so a missing or broken one fails here.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		tb.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// newTab opens a tab in a fresh browser context of ctx's browser: its own
// cookies, as another person's browser would have.
func newTab(tb testing.TB, ctx context.Context) context.Context {
	tb.Helper()
	tab, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	tb.Cleanup(cancel)
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		tb.Fatal(err)
	}
	return tab
}

// do runs browser actions within d, failing the test with what was being
// done.
func do(tb testing.TB, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.Fatalf("browser: %s: %v", what, err)
	}
}

// run runs one browser action that returns a value.
func run[T any](tb testing.TB, ctx context.Context, what string, action chromedp.Action[T]) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		tb.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true in the page.
func waitJS(tb testing.TB, ctx context.Context, d time.Duration, what, expr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		tb.Fatalf("browser: waiting for %s: %v", what, err)
	}
}

// signInBrowser signs a tab in through the sign-in form.
func signInBrowser(tb testing.TB, ctx context.Context, base, key string) {
	tb.Helper()
	do(tb, ctx, 30*time.Second, "sign in",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), key),
		chromedp.Submit(chromedp.ID("key")),
		chromedp.WaitVisible(chromedp.CSS(`nav[aria-label="Main"]`)),
	)
}

// screenshotDir is where screenshots go: the README's docs/screenshots
// when SANDPOOL_SCREENSHOTS=1 (to refresh them), else a test directory.
func screenshotDir(tb testing.TB) string {
	if os.Getenv("SANDPOOL_SCREENSHOTS") == "1" {
		return filepath.Join("..", "docs", "screenshots")
	}
	return tb.TempDir()
}

// screenshot saves the whole page as PNG under dir.
func screenshot(tb testing.TB, ctx context.Context, dir, name string) {
	tb.Helper()
	buf := run(tb, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if !bytes.HasPrefix(buf, []byte("\x89PNG\r\n\x1a\n")) || len(buf) < 1000 {
		tb.Fatalf("screenshot %s is not a PNG image (%d bytes)", name, len(buf))
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		tb.Fatal(err)
	}
}
