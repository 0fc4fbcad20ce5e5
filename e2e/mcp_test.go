package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// The MCP front end, driven with the Go SDK's MCP client over both
// transports: `sandpool mcp` as a subprocess (stdio), and /mcp of
// `sandpool serve` (streamable HTTP).

var mcpTools = []string{"create_sandbox", "destroy_sandbox", "list_files", "list_sandboxes", "read_file",
	"run_code", "run_command", "write_file"}

// mcpClient is one MCP session and what it was told of progress.
type mcpClient struct {
	*mcp.ClientSession
	t *testing.T

	mu       sync.Mutex
	progress []string
}

func newMCPClient(t *testing.T, transport mcp.Transport) *mcpClient {
	t.Helper()
	mc := &mcpClient{t: t}
	c := mcp.NewClient(&mcp.Implementation{Name: "sandpool-e2e", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mc.mu.Lock()
			mc.progress = append(mc.progress, req.Params.Message)
			mc.mu.Unlock()
		}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := c.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	mc.ClientSession = cs
	t.Cleanup(func() { cs.Close() })
	return mc
}

// mcpStdio runs `sandpool mcp` with key as an agent would.
func mcpStdio(t *testing.T, s *server, key string, flags ...string) *mcpClient {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"mcp", "--url", s.url, "--api-key", key}, flags...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if stderr.String() != "" {
			t.Logf("sandpool mcp stderr:\n%s", stderr.String())
		}
	})
	return newMCPClient(t, &mcp.CommandTransport{Command: cmd})
}

// bearer sends an API key with every request.
type bearer struct {
	key string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.rt.RoundTrip(r)
}

// mcpHTTP connects to /mcp of s with key (and a query, like "?pool=p").
func mcpHTTP(t *testing.T, s *server, key, query string) *mcpClient {
	t.Helper()
	return newMCPClient(t, &mcp.StreamableClientTransport{Endpoint: s.url + "/mcp" + query,
		HTTPClient: &http.Client{Transport: bearer{key, http.DefaultTransport}}, MaxRetries: -1})
}

// call calls a tool; a protocol error fails the test (failures a model
// can act on are results with IsError).
func (mc *mcpClient) call(name string, args map[string]any) *mcp.CallToolResult {
	mc.t.Helper()
	return mc.callParams(&mcp.CallToolParams{Name: name, Arguments: args})
}

func (mc *mcpClient) callParams(p *mcp.CallToolParams) *mcp.CallToolResult {
	mc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := mc.CallTool(ctx, p)
	if err != nil {
		mc.t.Fatalf("%s: protocol error: %v", p.Name, err)
	}
	return res
}

// ok calls a tool that must succeed and returns its structured content.
func (mc *mcpClient) ok(name string, args map[string]any) map[string]any {
	mc.t.Helper()
	res := mc.call(name, args)
	if res.IsError {
		mc.t.Fatalf("%s %v: error result: %s", name, args, resultText(res))
	}
	return structured(mc.t, res)
}

func (mc *mcpClient) toolNames() []string {
	mc.t.Helper()
	res, err := mc.ListTools(context.Background(), nil)
	if err != nil {
		mc.t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		if tool.Description == "" || tool.InputSchema == nil {
			mc.t.Errorf("tool %s has no description or schema", tool.Name)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func structured(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return m
}

// deleteAll destroys what a tenant has left (a failed test may leave its
// session's sandbox), before the server stops.
func deleteAll(t *testing.T, c *client.Client) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		list, err := c.ListSandboxes(ctx, client.ListOptions{})
		if err != nil {
			t.Errorf("list to clean up: %v", err)
			return
		}
		for _, sb := range list {
			if err := c.DeleteSandbox(ctx, sb.ID); err != nil && !client.IsNotFound(err) {
				t.Errorf("clean up %s: %v", sb.ID, err)
			}
		}
	})
}

// gone reports whether the sandbox was destroyed.
func gone(t *testing.T, c *client.Client, id string) bool {
	t.Helper()
	sb, err := c.GetSandbox(context.Background(), id)
	if client.IsNotFound(err) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return sb.Status == "stopped"
}

// exerciseMCP is what every transport must do: it returns the session's
// own sandbox, which the native client sees.
func exerciseMCP(t *testing.T, mc *mcpClient, native *client.Client) string {
	t.Helper()
	if got := mc.toolNames(); !slices.Equal(got, mcpTools) {
		t.Fatalf("tools %v, want %v", got, mcpTools)
	}

	// Python writes a file; no sandbox named: the session gets its own.
	out := mc.ok("run_code", map[string]any{"language": "python",
		"code": "open('/home/user/hello.txt', 'w').write('hi from python\\n')\nprint('done')"})
	id, _ := out["sandbox_id"].(string)
	if out["stdout"] != "done\n" || out["exit_code"] != 0.0 || !strings.HasPrefix(id, "sb_") {
		t.Fatalf("run_code: %v", out)
	}
	sb, err := native.GetSandbox(context.Background(), id)
	if err != nil || sb.Status != "running" || sb.Metadata["mcp"] != "session" {
		t.Fatalf("the session's sandbox, seen by the native client: %+v %v", sb, err)
	}
	if got := mc.ok("read_file", map[string]any{"path": "hello.txt"}); got["content"] != "hi from python\n" || got["sandbox_id"] != id {
		t.Fatalf("read back: %v", got)
	}
	files := mc.ok("list_files", nil)
	if !strings.Contains(mustJSON(t, files["entries"]), `"name":"hello.txt"`) {
		t.Fatalf("list_files: %v", files)
	}
	mc.ok("write_file", map[string]any{"path": "/tmp/bin.dat", "content": "AAEC/w==", "encoding": "base64"})
	if got := mc.ok("read_file", map[string]any{"path": "/tmp/bin.dat"}); got["encoding"] != "base64" || got["content"] != "AAEC/w==" {
		t.Fatalf("binary read back: %v", got)
	}

	// A command that times out is a result with isError, and what it
	// printed until then.
	res := mc.call("run_command", map[string]any{"shell": "echo started; sleep 30", "timeout": 0.5})
	got := structured(t, res)
	if !res.IsError || got["timed_out"] != true || got["stdout"] != "started\n" || !strings.Contains(resultText(res), "Timed out") {
		t.Fatalf("timeout: isError %v %v\n%s", res.IsError, got, resultText(res))
	}
	// A non-zero exit, too.
	res = mc.call("run_command", map[string]any{"argv": []string{"sh", "-c", "echo oops >&2; exit 3"}})
	if got := structured(t, res); !res.IsError || got["exit_code"] != 3.0 || got["stderr"] != "oops\n" {
		t.Fatalf("exit 3: isError %v %v", res.IsError, got)
	}
	// A missing sandbox and bad arguments are results with isError.
	res = mc.call("read_file", map[string]any{"sandbox_id": "sb_nosuchsandbox", "path": "x"})
	if !res.IsError || !strings.Contains(resultText(res), "list_sandboxes") {
		t.Fatalf("missing sandbox: %v %s", res.IsError, resultText(res))
	}
	res = mc.call("run_command", map[string]any{"argv": []string{"true"}, "shell": "true"})
	if !res.IsError || !strings.Contains(resultText(res), "not both") {
		t.Fatalf("argv and shell: %v %s", res.IsError, resultText(res))
	}
	res = mc.call("run_code", map[string]any{"language": "cobol", "code": "x"})
	if !res.IsError {
		t.Fatalf("unknown language: %s", resultText(res))
	}

	// Oversize: a long output is cut in the middle, with a note; a file
	// over read_file's limit is an error that says how to read it.
	res = mc.call("run_command", map[string]any{"shell": "seq 1 200000; head -c 300000 /dev/zero | tr '\\0' a > big.txt"})
	if got := structured(t, res); res.IsError || got["stdout_truncated"] != true ||
		!strings.HasPrefix(got["stdout"].(string), "1\n2\n") || !strings.HasSuffix(got["stdout"].(string), "199999\n200000\n") ||
		!strings.Contains(resultText(res), "bytes left out") {
		t.Fatalf("long output: isError %v, truncated %v\n%.300s", res.IsError, got["stdout_truncated"], resultText(res))
	}
	res = mc.call("read_file", map[string]any{"path": "big.txt"})
	if !res.IsError || !strings.Contains(resultText(res), "larger than read_file's limit") {
		t.Fatalf("oversize file: isError %v %.300s", res.IsError, resultText(res))
	}

	// Output streams as progress notifications when the client asks.
	res = mc.callParams(&mcp.CallToolParams{Name: "run_command", Meta: mcp.Meta{"progressToken": "p1"},
		Arguments: map[string]any{"shell": "for i in 1 2 3; do echo line$i; sleep 0.1; done"}})
	if res.IsError {
		t.Fatal(resultText(res))
	}
	waitFor(t, "progress notifications with the output", func() bool {
		mc.mu.Lock()
		defer mc.mu.Unlock()
		return strings.Contains(strings.Join(mc.progress, ""), "line1\nline2\nline3\n")
	})

	list := mc.ok("list_sandboxes", nil)
	if s := mustJSON(t, list["sandboxes"]); !strings.Contains(s, id) || !strings.Contains(s, `"session":true`) {
		t.Fatalf("list_sandboxes: %v", list)
	}
	return id
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds, for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// otherTenantCannotTouch checks that a session of another tenant can
// neither use nor destroy id.
func otherTenantCannotTouch(t *testing.T, other *mcpClient, native *client.Client, id string) {
	t.Helper()
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"run_command", map[string]any{"sandbox_id": id, "shell": "echo pwned > /home/user/pwned"}},
		{"read_file", map[string]any{"sandbox_id": id, "path": "hello.txt"}},
		{"write_file", map[string]any{"sandbox_id": id, "path": "pwned", "content": "x"}},
		{"destroy_sandbox", map[string]any{"sandbox_id": id}},
	} {
		if res := other.call(c.tool, c.args); !res.IsError || !strings.Contains(resultText(res), "no sandbox") {
			t.Errorf("another tenant's %s on %s: isError %v %s", c.tool, id, res.IsError, resultText(res))
		}
	}
	if list := other.ok("list_sandboxes", nil); strings.Contains(mustJSON(t, list), id) {
		t.Errorf("another tenant lists %s: %v", id, list)
	}
	if sb, err := native.GetSandbox(context.Background(), id); err != nil || sb.Status != "running" {
		t.Fatalf("after another tenant's tries: %+v %v", sb, err)
	}
	if _, err := native.Stat(context.Background(), id, "/home/user/pwned"); !client.IsNotFound(err) {
		t.Fatalf("another tenant wrote in the sandbox: %v", err)
	}
}

func TestMCPStdio(t *testing.T) {
	s := startServer(t, "")
	acmeKey, othersKey := tenantKey(t, s, "acme"), tenantKey(t, s, "others")
	acme := s.client(acmeKey)
	deleteAll(t, acme)
	deleteAll(t, s.client(othersKey))

	mc := mcpStdio(t, s, acmeKey)
	id := exerciseMCP(t, mc, acme)
	otherTenantCannotTouch(t, mcpStdio(t, s, othersKey), acme, id)

	// The agent closes the session (stdin ends): the sandbox goes with it
	// before the process exits.
	if err := mc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !gone(t, acme, id) {
		t.Fatalf("the session's sandbox %s outlived its stdio session", id)
	}
}

// tenantKey makes a key for a new tenant.
func tenantKey(t *testing.T, s *server, tenant string) string {
	t.Helper()
	k, err := s.client("").CreateKey(context.Background(), tenant, false)
	if err != nil {
		t.Fatal(err)
	}
	return k.Secret
}

func TestMCPHTTP(t *testing.T) {
	s := startServer(t, "")
	acmeKey, othersKey := tenantKey(t, s, "acme"), tenantKey(t, s, "others")
	acme := s.client(acmeKey)
	deleteAll(t, acme)
	deleteAll(t, s.client(othersKey))

	// No key, or a wrong one: 401 before any session is made.
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`
	for _, key := range []string{"", "spk_wrong"} {
		resp := mcpPost(t, s, key, "", initialize)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Mcp-Session-Id") != "" {
			t.Fatalf("initialize with key %q: %s, session %q", key, resp.Status, resp.Header.Get("Mcp-Session-Id"))
		}
	}

	mc := mcpHTTP(t, s, acmeKey, "")
	id := exerciseMCP(t, mc, acme)
	other := mcpHTTP(t, s, othersKey, "")
	otherTenantCannotTouch(t, other, acme, id)
	// Nor can another tenant's key use, or end, the session itself.
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_sandboxes","arguments":{}}}`
	if resp := mcpPost(t, s, othersKey, mc.ID(), call); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another tenant's key on the session: %s", resp.Status)
	}
	if resp := mcpDo(t, s, http.MethodDelete, othersKey, mc.ID(), ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another tenant's key deleting the session: %s", resp.Status)
	}
	if gone(t, acme, id) {
		t.Fatal("the session's sandbox went when another tenant deleted the session")
	}

	// The client disconnects (DELETE): the sandbox is gone when it is
	// answered.
	if err := mc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !gone(t, acme, id) {
		t.Fatalf("the session's sandbox %s outlived its HTTP session", id)
	}
}

// mcpPost sends one JSON-RPC message to /mcp.
func mcpPost(t *testing.T, s *server, key, session, body string) *http.Response {
	t.Helper()
	return mcpDo(t, s, http.MethodPost, key, session, body)
}

func mcpDo(t *testing.T, s *server, method, key, session, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
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
	resp.Body.Close()
	return resp
}

// With a pool named, the session's sandbox is acquired from it and given
// back when the session ends; acquire_from_pool and release are offered.
func TestMCPPool(t *testing.T) {
	s := startServer(t, "")
	key := tenantKey(t, s, "team")
	c := s.client(key)
	deleteAll(t, c)
	ctx := context.Background()
	if _, err := c.CreatePool(ctx, client.PoolConfig{Name: "warm", Template: "base", MinIdle: 1, MaxIdle: 2,
		AcquirePolicy: "direct_create"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeletePool(ctx, "warm"); err != nil {
			t.Errorf("delete pool: %v", err)
		}
	})
	waitPool(t, c, "warm", 1)

	for _, transport := range []string{"stdio", "http"} {
		t.Run(transport, func(t *testing.T) {
			var mc *mcpClient
			if transport == "stdio" {
				mc = mcpStdio(t, s, key, "--pool", "warm")
			} else {
				mc = mcpHTTP(t, s, key, "?pool=warm")
			}
			want := slices.Sorted(slices.Values(append([]string{"acquire_from_pool", "release"}, mcpTools...)))
			if got := mc.toolNames(); !slices.Equal(got, want) {
				t.Fatalf("tools %v, want %v", got, want)
			}
			own := mc.ok("run_command", map[string]any{"argv": []string{"echo", "hi"}})["sandbox_id"].(string)
			sb, err := c.GetSandbox(ctx, own)
			if err != nil || sb.Pool != "warm" || sb.Status != "running" {
				t.Fatalf("the session's sandbox: %+v %v", sb, err)
			}
			more := mc.ok("acquire_from_pool", nil)["sandbox_id"].(string)
			mc.ok("run_command", map[string]any{"sandbox_id": more, "shell": "true"})
			mc.ok("release", map[string]any{"sandbox_id": more})
			if err := mc.Close(); err != nil {
				t.Fatal(err)
			}
			p, err := c.GetPool(ctx, "warm")
			if err != nil || p.InUse != 0 {
				t.Fatalf("after the session ended, the pool has %d in use (%v)", p.InUse, err)
			}
			if sb, err := c.GetSandbox(ctx, own); err == nil && sb.Status == "running" {
				t.Fatalf("the session's pool sandbox was not given back: %+v", sb)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The published TypeScript SDK's client (e2e/mcpnode) against /mcp.
func TestMCPNodeClient(t *testing.T) {
	npmInstall(t, "mcpnode")
	s := startServer(t, "")
	key := tenantKey(t, s, "nodejs")
	c := s.client(key)
	deleteAll(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "client.mjs")
	cmd.Dir = "mcpnode"
	cmd.Env = append(os.Environ(), "SANDPOOL_MCP_URL="+s.url+"/mcp", "SANDPOOL_API_KEY="+key)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s%s", err, out, stderr.String())
	}
	var got struct {
		Tools        []string
		Python, Node struct {
			IsError    bool
			Text       string
			Structured map[string]any
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node client.mjs printed %q: %v", out, err)
	}
	if !slices.Equal(got.Tools, mcpTools) {
		t.Errorf("tools %v, want %v", got.Tools, mcpTools)
	}
	if got.Python.IsError || got.Python.Structured["stdout"] != "42 3\n" || !strings.Contains(got.Python.Text, "42 3") {
		t.Errorf("python: %+v", got.Python)
	}
	if got.Node.IsError || got.Node.Structured["stdout"] != "2,4,6\n" {
		t.Errorf("node: %+v", got.Node)
	}
	// The session ended: its sandbox is gone.
	id, _ := got.Python.Structured["sandbox_id"].(string)
	if id == "" || id != got.Node.Structured["sandbox_id"] || !gone(t, c, id) {
		t.Errorf("the session's sandbox %q (node's %v) is not gone after the session ended", id, got.Node.Structured["sandbox_id"])
	}
}

// Stopping sandpool serve ends its MCP sessions, and their sandboxes go
// with them (other sandboxes outlive a stop by design).
func TestMCPServeStopEndsSessions(t *testing.T) {
	s := startServer(t, "")
	key := tenantKey(t, s, "acme")
	c := s.client(key)
	kept, err := c.CreateSandbox(context.Background(), client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	mc := mcpHTTP(t, s, key, "")
	own := mc.ok("run_command", map[string]any{"shell": "true"})["sandbox_id"].(string)
	s.stop()

	s = startServer(t, s.data)
	c = s.client(key)
	deleteAll(t, c)
	if !gone(t, c, own) {
		t.Errorf("the MCP session's sandbox %s outlived the server's stop", own)
	}
	if sb, err := c.GetSandbox(context.Background(), kept.ID); err != nil || sb.Status != "running" {
		t.Errorf("a sandbox made through the API, after a stop: %+v %v", sb, err)
	}
}
