package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// flaky is a server that fails the first `failures` requests with status
// (or by dropping the connection when status is 0), then answers ok.
type flaky struct {
	mu       sync.Mutex
	failures int
	status   int
	header   http.Header
	ok       func(w http.ResponseWriter, r *http.Request)
	seen     []*http.Request
	times    []time.Time
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Clone(context.Background()))
	f.times = append(f.times, time.Now())
	fail := len(f.seen) <= f.failures
	f.mu.Unlock()
	if !fail {
		f.ok(w, r)
		return
	}
	if f.status == 0 {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // the client sees a reset or EOF
		}
		return
	}
	for k, v := range f.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	w.Write([]byte(`{"error":{"code":"busy","message":"try later"}}`))
}

func (f *flaky) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

func sandboxJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	status := http.StatusOK
	if r.Method == "POST" {
		status = http.StatusCreated
	}
	w.WriteHeader(status)
	w.Write([]byte(`{"id":"sb_1","status":"running","template":"base","created_at":"2026-01-01T00:00:00Z"}`))
}

func newTestClient(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "spk_test", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReadsAreRetried(t *testing.T) {
	for _, status := range []int{425, 429, 502, 503, 504, 0} {
		f := &flaky{failures: 2, status: status, ok: sandboxJSON}
		c := newTestClient(t, f)
		sb, err := c.GetSandbox(context.Background(), "sb_1")
		if err != nil || sb.ID != "sb_1" {
			t.Fatalf("status %d: %+v %v", status, sb, err)
		}
		reqs := f.requests()
		if len(reqs) != 3 {
			t.Fatalf("status %d: %d requests, want 3", status, len(reqs))
		}
		if reqs[0].Header.Get("Authorization") != "Bearer spk_test" {
			t.Fatalf("authorization %q", reqs[0].Header.Get("Authorization"))
		}
	}
}

func TestOtherErrorsAreNotRetried(t *testing.T) {
	for _, status := range []int{400, 401, 404, 409, 422, 500} {
		f := &flaky{failures: 1, status: status, ok: sandboxJSON}
		c := newTestClient(t, f)
		_, err := c.GetSandbox(context.Background(), "sb_1")
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != status || ae.Code != "busy" {
			t.Fatalf("status %d: %v", status, err)
		}
		if n := len(f.requests()); n != 1 {
			t.Fatalf("status %d: %d requests, want 1", status, n)
		}
	}
}

// A mutating call is sent once, whatever the answer.
func TestMutationsAreSentOnce(t *testing.T) {
	for _, status := range []int{503, 429, 0} {
		f := &flaky{failures: 5, status: status, ok: sandboxJSON}
		c := newTestClient(t, f)
		ctx := context.Background()
		calls := map[string]func() error{
			"delete": func() error { return c.DeleteSandbox(ctx, "sb_1") },
			"exec":   func() error { _, err := c.Exec(ctx, "sb_1", ExecRequest{Cmd: []string{"true"}}); return err },
			"signal": func() error { return c.Signal(ctx, "sb_1", "p1", "TERM") },
			"mkdir":  func() error { return c.Mkdir(ctx, "sb_1", "/x", false) },
		}
		for name, call := range calls {
			before := len(f.requests())
			if err := call(); err == nil {
				t.Fatalf("%s against a failing server succeeded", name)
			}
			if n := len(f.requests()) - before; n != 1 {
				t.Fatalf("%s (status %d): sent %d times, want once", name, status, n)
			}
		}
	}
}

// A create is retried, always with the same idempotency key.
func TestCreateIsRetriedWithOneKey(t *testing.T) {
	for _, status := range []int{503, 0} {
		f := &flaky{failures: 2, status: status, ok: sandboxJSON}
		c := newTestClient(t, f)
		sb, err := c.CreateSandbox(context.Background(), CreateSandboxRequest{Template: "base"})
		if err != nil || sb.ID != "sb_1" {
			t.Fatalf("create: %+v %v", sb, err)
		}
		reqs := f.requests()
		if len(reqs) != 3 {
			t.Fatalf("%d requests, want 3", len(reqs))
		}
		key := reqs[0].Header.Get("Idempotency-Key")
		if len(key) < 16 {
			t.Fatalf("idempotency key %q", key)
		}
		for _, r := range reqs {
			if r.Header.Get("Idempotency-Key") != key {
				t.Fatalf("keys differ: %q and %q", key, r.Header.Get("Idempotency-Key"))
			}
		}
	}
	// Two creates get two keys.
	f := &flaky{ok: sandboxJSON}
	c := newTestClient(t, f)
	for range 2 {
		if _, err := c.CreateSandbox(context.Background(), CreateSandboxRequest{Template: "base"}); err != nil {
			t.Fatal(err)
		}
	}
	if r := f.requests(); r[0].Header.Get("Idempotency-Key") == r[1].Header.Get("Idempotency-Key") {
		t.Fatal("two creates shared an idempotency key")
	}
}

// handlerTransport serves requests with a handler in the caller's
// goroutine: no network, so a test can run in a synctest bubble, where
// time is fake and the retry policy's waits can be read exactly.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, r)
	return w.Result(), nil
}

func newBubbleClient(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	opts = append(opts, WithHTTPClient(&http.Client{Transport: handlerTransport{h}}))
	c, err := New("http://sandpool.test", "spk_test", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRetryAfterIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{failures: 1, status: 503, header: http.Header{"Retry-After": {"3"}}, ok: sandboxJSON}
		c := newBubbleClient(t, f)
		if _, err := c.GetSandbox(context.Background(), "sb_1"); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		gap := f.times[1].Sub(f.times[0])
		f.mu.Unlock()
		if gap != 3*time.Second {
			t.Fatalf("retried after %v, want the 3s of Retry-After", gap)
		}
	})
}

func TestRetriesStopAtTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{failures: 1 << 30, status: 503, ok: sandboxJSON}
		c := newBubbleClient(t, f, WithRetryBudget(5*time.Second))
		start := time.Now()
		_, err := c.GetSandbox(context.Background(), "sb_1")
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 503 {
			t.Fatalf("after the budget: %v, want the 503", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("gave up after %v with a 5s budget", took)
		}
		// Waits of 0.2 s doubling to 2 s, each ±50% jitter, within 5 s:
		// at least four attempts, and the gaps never pass the cap.
		f.mu.Lock()
		times := f.times
		f.mu.Unlock()
		if len(times) < 4 {
			t.Fatalf("%d attempts in a 5s budget with 0.2s doubling backoff", len(times))
		}
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < 100*time.Millisecond || gap > 3*time.Second {
				t.Fatalf("gap %d: %v, outside 0.1-3 s", i, gap)
			}
		}
	})
	f := &flaky{failures: 1 << 30, status: 503, ok: sandboxJSON}
	c := newTestClient(t, f, WithRetryBudget(time.Second))
	// A cancelled context stops retrying at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.GetSandbox(ctx, "sb_1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7423", "ftp://x", "http://"} {
		if _, err := New(u, "k"); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestNoRetriesWithoutBudget(t *testing.T) {
	f := &flaky{failures: 1, status: 429, header: http.Header{"Retry-After": {"1"}}, ok: sandboxJSON}
	c := newTestClient(t, f, WithRetryBudget(0))
	_, err := c.GetSandbox(context.Background(), "sb_1")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 429 {
		t.Fatalf("got %v, want the 429", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("%d requests with retries off", n)
	}
}
