package mcpserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

type keyed struct {
	key string
	rt  http.RoundTripper
}

func (k keyed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if k.key != "" {
		r.Header.Set("Authorization", "Bearer "+k.key)
	}
	return k.rt.RoundTrip(r)
}

// serveHTTPTest serves a Handler over f on a test server; both are
// stopped when the test ends.
func serveHTTPTest(t *testing.T, f *fakeAPI) (*Handler, *httptest.Server) {
	t.Helper()
	h, err := NewHandler(f, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return h, ts
}

func connectHTTP(t *testing.T, ts *httptest.Server, key string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: ts.URL,
		HTTPClient: &http.Client{Transport: keyed{key, http.DefaultTransport}}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callText(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	text, isErr, err := tryCallText(cs, name, args)
	if err != nil {
		t.Fatal(err)
	}
	return text, isErr
}

// tryCallText is callText for goroutines, which must not call t.Fatal.
func tryCallText(cs *mcp.ClientSession, name string, args map[string]any) (string, bool, error) {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", name, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String(), res.IsError, nil
}

const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

func post(t *testing.T, url, key, session, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestHTTPNeedsAKey(t *testing.T) {
	_, ts := serveHTTPTest(t, newFakeAPI())
	for _, key := range []string{"", "nonsense"} {
		if resp := post(t, ts.URL, key, "", initialize); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Mcp-Session-Id") != "" {
			t.Errorf("key %q: %s, session %q", key, resp.Status, resp.Header.Get("Mcp-Session-Id"))
		}
	}
	resp := post(t, ts.URL, "key-a", "", initialize)
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || session == "" {
		t.Fatalf("a valid key: %s, session %q", resp.Status, session)
	}
	// The session is the key's: another valid key may not use it.
	if resp := post(t, ts.URL, "key-b", session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another key on the session: %s", resp.Status)
	}
	if resp := post(t, ts.URL+"?pool=Bad!", "key-a", "", initialize); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad pool name: %s", resp.Status)
	}
}

// A session's calls share one sandbox, made once even by calls that come
// together, and destroyed before the session's DELETE is answered.
func TestHTTPSessionSandbox(t *testing.T) {
	f := newFakeAPI()
	_, ts := serveHTTPTest(t, f)
	cs := connectHTTP(t, ts, "key-a")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if text, isErr, err := tryCallText(cs, "run_command", map[string]any{"shell": "echo"}); err != nil || isErr {
				t.Errorf("run_command: %s %v", text, err)
			}
		})
	}
	wg.Wait()
	if created, _, _ := f.counts(); created != 1 {
		t.Fatalf("%d sandboxes made for one session", created)
	}
	// Another tenant's session gets its own, and cannot use this one.
	other := connectHTTP(t, ts, "key-b")
	if text, isErr := callText(t, other, "run_command", map[string]any{"sandbox_id": "sb_1", "shell": "x"}); !isErr || !strings.Contains(text, "no sandbox") {
		t.Fatalf("another tenant: %v %s", isErr, text)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if _, deleted, _ := f.counts(); !slices.Equal(deleted, []string{"sb_1"}) {
		t.Fatalf("deleted %v when the session ended, want [sb_1]", deleted)
	}
}

// Close ends every session, cancelling calls under way, and destroys
// their sandboxes.
func TestHTTPCloseEndsSessions(t *testing.T) {
	f := newFakeAPI()
	h, ts := serveHTTPTest(t, f)
	cs := connectHTTP(t, ts, "key-a")
	callText(t, cs, "run_command", map[string]any{"shell": "echo"})
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		// It ends one way or another when the server closes.
		_, _ = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "run_command", Arguments: map[string]any{"shell": "block"}})
	}()
	<-f.blocking // the command runs
	h.Close()
	if _, deleted, _ := f.counts(); !slices.Equal(deleted, []string{"sb_1"}) {
		t.Fatalf("deleted %v at Close, want [sb_1]", deleted)
	}
	cs.Close()
	<-blocked
}

// Over stdio, the session's sandbox is pinged while the session lasts,
// and destroyed when its input ends.
func TestStdioKeepAliveAndEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAPI()
		c, err := client.New(inProcessURL, "key-a", client.WithHTTPClient(inProcessClient(f)))
		if err != nil {
			t.Fatal(err)
		}
		toServer, fromClient := io.Pipe()
		toClient, fromServer := io.Pipe()
		served := make(chan error, 1)
		go func() {
			served <- ServeStdio(context.Background(), c, Config{KeepAlive: 10 * time.Second}, toServer, fromServer)
			fromServer.Close()
		}()
		mc := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
		cs, err := mc.Connect(context.Background(), &mcp.IOTransport{Reader: toClient, Writer: fromClient}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if text, isErr := callText(t, cs, "run_command", map[string]any{"shell": "echo"}); isErr {
			t.Fatal(text)
		}
		time.Sleep(35 * time.Second)
		synctest.Wait()
		if _, _, pings := f.counts(); pings != 3 {
			t.Fatalf("%d pings in 35s with a 10s keepalive, want 3", pings)
		}
		cs.Close() // closes fromClient: the server's input ends
		if err := <-served; err != nil {
			t.Fatalf("ServeStdio: %v", err)
		}
		if _, deleted, _ := f.counts(); !slices.Equal(deleted, []string{"sb_1"}) {
			t.Fatalf("deleted %v when the input ended, want [sb_1]", deleted)
		}
	})
}

// A language whose interpreter the template lacks is an error that says
// so; a sandbox that is gone is one that says what to do.
func TestToolErrors(t *testing.T) {
	f := newFakeAPI()
	_, ts := serveHTTPTest(t, f)
	cs := connectHTTP(t, ts, "key-a")
	text, isErr := callText(t, cs, "run_code", map[string]any{"language": "node", "code": "console.log(1)"})
	if !isErr || !strings.Contains(text, "no node interpreter") || !strings.Contains(text, "template (base)") {
		t.Fatalf("missing interpreter: %v %s", isErr, text)
	}
	// The session's sandbox vanishes (destroyed behind the session's back):
	// the model is told, and the next call gets a new one.
	own := "sb_1"
	f.mu.Lock()
	delete(f.sandboxes, own)
	f.mu.Unlock()
	text, isErr = callText(t, cs, "run_command", map[string]any{"shell": "echo"})
	if !isErr || !strings.Contains(text, "sandbox "+own+" is gone") {
		t.Fatalf("own sandbox gone: %v %s", isErr, text)
	}
	if text, isErr = callText(t, cs, "run_command", map[string]any{"shell": "echo"}); isErr {
		t.Fatalf("after the own sandbox went: %s", text)
	}
	if created, _, _ := f.counts(); created != 2 {
		t.Fatalf("%d sandboxes made, want 2", created)
	}
}

// An HTTP session that sends nothing for SessionTimeout ends, and its
// sandbox goes with it; until then the keepalive pings it.
func TestHTTPIdleSessionEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAPI()
		h, err := NewHandler(f, Config{SessionTimeout: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		mc := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
		cs, err := mc.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: inProcessURL + "/mcp",
			HTTPClient: &http.Client{Transport: keyed{"key-a", inProcess{h}}}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if text, isErr := callText(t, cs, "run_command", map[string]any{"shell": "echo"}); isErr {
			t.Fatal(text)
		}
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		if _, deleted, pings := f.counts(); len(deleted) != 0 || pings != 18 {
			t.Fatalf("after 9 idle minutes: deleted %v, %d pings (want none, and 18)", deleted, pings)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if _, deleted, _ := f.counts(); !slices.Equal(deleted, []string{"sb_1"}) {
			t.Fatalf("after 11 idle minutes with a 10 minute session timeout: deleted %v, want [sb_1]", deleted)
		}
	})
}
