package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	enc "encoding/binary"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

// e2bCall is one HTTP exchange with the E2B surface of a server.
type e2bCall struct {
	t      *testing.T
	s      *server
	key    string
	sbx    string // E2B sandbox id, once made
	token  string // its envd access token
	header http.Header
}

func (c *e2bCall) do(method, path string, h http.Header, body []byte) (int, []byte, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.s.url+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// api is a control-plane call with the key, as the Python SDK sends it.
func (c *e2bCall) api(method, path, body string) (int, []byte) {
	c.t.Helper()
	h := http.Header{"X-Api-Key": {c.key}, "User-Agent": {"e2b-python-sdk/2.45.1"}}
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	status, b, _ := c.do(method, path, h, []byte(body))
	return status, b
}

// envd is a request to the sandbox's envd, routed by headers, with its
// token.
func (c *e2bCall) envd(method, path, ctype string, body []byte, extra http.Header) (int, []byte) {
	c.t.Helper()
	h := http.Header{"E2b-Sandbox-Id": {c.sbx}, "E2b-Sandbox-Port": {"49983"}, "X-Access-Token": {c.token},
		"User-Agent": {"e2b-python-sdk/2.45.1"}, "Connect-Protocol-Version": {"1"}}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	for k, v := range extra {
		h[k] = v
	}
	status, b, _ := c.do(method, path, h, body)
	return status, b
}

// unary is a Connect unary call with the JSON codec.
func (c *e2bCall) unary(proc, body string) (int, map[string]any) {
	c.t.Helper()
	status, b := c.envd("POST", "/"+proc, "application/json", []byte(body), http.Header{"Connect-Timeout-Ms": {"60000"}})
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		c.t.Fatalf("%s: %d %q: %v", proc, status, b, err)
	}
	return status, out
}

// stream is a Connect server-streaming call: one enveloped request, the
// response's messages and its end-stream message.
func (c *e2bCall) stream(proc, body string, extra ...http.Header) (msgs []map[string]any, end map[string]any) {
	c.t.Helper()
	var req bytes.Buffer
	req.WriteByte(0)
	enc.Write(&req, enc.BigEndian, uint32(len(body)))
	req.WriteString(body)
	h := http.Header{"Connect-Timeout-Ms": {"60000"}}
	for _, e := range extra {
		for k, v := range e {
			h[k] = v
		}
	}
	status, b := c.envd("POST", "/"+proc, "application/connect+json", req.Bytes(), h)
	if status != http.StatusOK {
		c.t.Fatalf("%s: %d %s", proc, status, b)
	}
	for len(b) >= 5 {
		flags, n := b[0], enc.BigEndian.Uint32(b[1:5])
		var m map[string]any
		if err := json.Unmarshal(b[5:5+n], &m); err != nil {
			c.t.Fatalf("%s: envelope %q: %v", proc, b[5:5+n], err)
		}
		b = b[5+n:]
		if flags&2 != 0 {
			return msgs, m
		}
		msgs = append(msgs, m)
	}
	c.t.Fatalf("%s: no end-stream message", proc)
	return nil, nil
}

// The Python SDK cannot be installed here (PyPI is not reachable): its
// calls, as e2b 2.45.1 makes them (read from its source, the same wire
// spec as the JS SDK's), are sent as recorded: the v1 create it uses
// (POST /sandboxes, 201 only), a command, and the sync client's polled
// watch (CreateWatcher, GetWatcherEvents, RemoveWatcher), pause with
// {"memory": true}, connect, get, kill.
func TestE2BPythonSDKRequests(t *testing.T) {
	s := startServer(t, "")
	c := &e2bCall{t: t, s: s, key: s.e2bKey("py")}

	status, b := c.api("POST", "/sandboxes", `{"templateID": "base", "autoPause": false, "metadata": {"user": "a b"}, "timeout": 300, "envVars": {"FOO": "bar"}, "secure": true, "allow_internet_access": true}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, b)
	}
	var created map[string]any
	json.Unmarshal(b, &created)
	for _, k := range []string{"templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken"} {
		if v, _ := created[k].(string); v == "" {
			t.Errorf("create answered no %s: %s", k, b)
		}
	}
	c.sbx, _ = created["sandboxID"].(string)
	c.token, _ = created["envdAccessToken"].(string)
	defer c.api("DELETE", "/sandboxes/"+c.sbx, "")

	// commands.run("echo $FOO")
	msgs, end := c.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo $FOO"], "envs": {}}, "stdin": false}`)
	if len(end) != 0 {
		t.Fatalf("Start ended with %v", end)
	}
	var events []string
	for _, m := range msgs {
		ev, _ := m["event"].(map[string]any)
		for k, v := range ev {
			switch k {
			case "data":
				d := v.(map[string]any)
				out, _ := base64.StdEncoding.DecodeString(d["stdout"].(string))
				events = append(events, "stdout:"+string(out))
			case "end":
				e := v.(map[string]any)
				events = append(events, "end:"+e["status"].(string))
			default:
				events = append(events, k)
			}
		}
	}
	if strings.Join(events, "|") != "start|stdout:bar\n|end:exit status 0" {
		t.Fatalf("Start events %q", events)
	}

	// files.watch_dir (sync): a watcher polled for its events.
	status, w := c.unary("filesystem.Filesystem/CreateWatcher", `{"path": "/tmp", "recursive": false}`)
	watcher, _ := w["watcherId"].(string)
	if status != http.StatusOK || watcher == "" {
		t.Fatalf("CreateWatcher: %d %v", status, w)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	part, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Disposition": {`form-data; name="file"; filename="/tmp/z"`},
		"Content-Type": {"application/octet-stream"}})
	part.Write([]byte("zz"))
	mw.Close()
	if status, b := c.envd("POST", "/files?path=%2Ftmp%2Fz", mw.FormDataContentType(), form.Bytes(), nil); status != http.StatusOK ||
		!strings.Contains(string(b), `"path":"/tmp/z"`) {
		t.Fatalf("write: %d %s", status, b)
	}
	deadline := time.Now().Add(time.Minute)
	for found := false; !found; {
		status, evs := c.unary("filesystem.Filesystem/GetWatcherEvents", `{"watcherId": "`+watcher+`"}`)
		if status != http.StatusOK {
			t.Fatalf("GetWatcherEvents: %d %v", status, evs)
		}
		list, _ := evs["events"].([]any)
		for _, e := range list {
			e := e.(map[string]any)
			found = found || (e["name"] == "z" && e["type"] == "EVENT_TYPE_CREATE")
		}
		if time.Now().After(deadline) {
			t.Fatal("no create event for /tmp/z")
		}
	}
	if status, _ := c.unary("filesystem.Filesystem/RemoveWatcher", `{"watcherId": "`+watcher+`"}`); status != http.StatusOK {
		t.Fatalf("RemoveWatcher: %d", status)
	}
	if status, e := c.unary("filesystem.Filesystem/GetWatcherEvents", `{"watcherId": "`+watcher+`"}`); status != http.StatusNotFound || e["code"] != "not_found" {
		t.Fatalf("a removed watcher: %d %v", status, e)
	}

	// pause (twice), connect (resumes: 201), get, kill (twice).
	if status, b := c.api("POST", "/sandboxes/"+c.sbx+"/pause", `{"memory": true}`); status != http.StatusNoContent {
		t.Fatalf("pause: %d %s", status, b)
	}
	if status, b := c.api("POST", "/sandboxes/"+c.sbx+"/pause", `{"memory": true}`); status != http.StatusConflict || !strings.Contains(string(b), `"code":409`) {
		t.Fatalf("pause of a paused sandbox: %d %s", status, b)
	}
	if status, b := c.api("POST", "/sandboxes/"+c.sbx+"/timeout", `{"timeout": 60}`); status != http.StatusNotFound {
		t.Fatalf("timeout of a paused sandbox: %d %s", status, b)
	}
	if status, b := c.api("POST", "/sandboxes/"+c.sbx+"/connect", `{"timeout": 300}`); status != http.StatusCreated {
		t.Fatalf("connect: %d %s", status, b)
	}
	if status, b := c.api("POST", "/sandboxes/"+c.sbx+"/connect", `{"timeout": 300}`); status != http.StatusOK {
		t.Fatalf("connect to a running sandbox: %d %s", status, b)
	}
	status, b = c.api("GET", "/sandboxes/"+c.sbx, "")
	var detail map[string]any
	json.Unmarshal(b, &detail)
	if status != http.StatusOK || detail["state"] != "running" || detail["clientID"] == "" || detail["envdAccessToken"] != c.token {
		t.Fatalf("get: %d %s", status, b)
	}
	for _, k := range []string{"templateID", "sandboxID", "clientID", "startedAt", "endAt", "envdVersion", "cpuCount", "memoryMB", "diskSizeMB", "state"} {
		if _, ok := detail[k]; !ok {
			t.Errorf("SandboxDetail without %s: %s", k, b)
		}
	}
	if status, b := c.api("DELETE", "/sandboxes/"+c.sbx, ""); status != http.StatusNoContent {
		t.Fatalf("kill: %d %s", status, b)
	}
	if status, b := c.api("DELETE", "/sandboxes/"+c.sbx, ""); status != http.StatusNotFound || !strings.Contains(string(b), `"code":404`) {
		t.Fatalf("kill again: %d %s", status, b)
	}
}

// Bad input gets the status codes the SDKs expect, and changes nothing.
func TestE2BBadInput(t *testing.T) {
	s := startServer(t, "")
	key := s.e2bKey("bad")
	c := &e2bCall{t: t, s: s, key: key}
	status, b := c.api("POST", "/v2/sandboxes", `{"templateID": "base", "timeout": 60}`)
	var created map[string]string
	json.Unmarshal(b, &created)
	c.sbx, c.token = created["sandboxID"], created["envdAccessToken"]
	if status != http.StatusCreated || c.sbx == "" {
		t.Fatalf("create: %d %s", status, b)
	}
	defer c.api("DELETE", "/sandboxes/"+c.sbx, "")
	// A file that must survive everything below.
	if status, b := c.envd("POST", "/files?path=/home/user/keep.txt", "application/octet-stream", []byte("kept"), nil); status != http.StatusOK {
		t.Fatalf("write: %d %s", status, b)
	}

	for _, tc := range []struct {
		name, method, path, body string
		key                      string
		status                   int
	}{
		{"unknown template", "POST", "/v2/sandboxes", `{"templateID": "no-such-template"}`, key, 404},
		{"bad JSON", "POST", "/v2/sandboxes", `{"templateID": `, key, 400},
		{"timeout of the wrong type", "POST", "/sandboxes", `{"templateID": "base", "timeout": "soon"}`, key, 400},
		{"negative timeout", "POST", "/v2/sandboxes", `{"templateID": "base", "timeout": -5}`, key, 400},
		{"timeout too long", "POST", "/v2/sandboxes", `{"templateID": "base", "timeout": 99999999}`, key, 400},
		{"volume mounts", "POST", "/v2/sandboxes", `{"templateID": "base", "volumeMounts": [{"name": "v", "path": "/v"}]}`, key, 501},
		{"no key", "POST", "/v2/sandboxes", `{}`, "", 401},
		{"unknown key", "GET", "/v2/sandboxes", ``, "e2b_" + strings.Repeat("0", 40), 401},
		{"unknown sandbox", "GET", "/sandboxes/zzz", ``, key, 404},
		{"sandbox id out of form", "DELETE", "/sandboxes/SB-1", ``, key, 404},
		{"timeout of an unknown sandbox", "POST", "/sandboxes/zzz/timeout", `{"timeout": 5}`, key, 404},
		{"bad state filter", "GET", "/v2/sandboxes?state=gone", ``, key, 400},
		{"bad limit", "GET", "/v2/sandboxes?limit=0", ``, key, 400},
		{"unoffered route", "POST", "/sandboxes/" + c.sbx + "/snapshots", `{}`, key, 501},
	} {
		h := http.Header{"Content-Type": {"application/json"}}
		if tc.key != "" {
			h.Set("X-Api-Key", tc.key)
		}
		status, b, _ := c.do(tc.method, tc.path, h, []byte(tc.body))
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &e); err != nil || status != tc.status || e.Code != tc.status || e.Message == "" {
			t.Errorf("%s: %d %s, want %d with {code, message}", tc.name, status, b, tc.status)
		}
	}

	// envd: unknown sandbox (502: gone, to the SDK), missing or wrong
	// token (401), half the routing headers (400), paths out of the
	// sandbox (400, invalid_argument).
	for _, tc := range []struct {
		name   string
		h      http.Header
		status int
	}{
		{"unknown sandbox", http.Header{"E2b-Sandbox-Id": {"zzz"}, "E2b-Sandbox-Port": {"49983"}}, 502},
		{"no token", http.Header{"E2b-Sandbox-Id": {c.sbx}, "E2b-Sandbox-Port": {"49983"}}, 401},
		{"wrong token", http.Header{"E2b-Sandbox-Id": {c.sbx}, "E2b-Sandbox-Port": {"49983"}, "X-Access-Token": {strings.Repeat("0", 64)}}, 401},
		{"another tenant's key", http.Header{"E2b-Sandbox-Id": {c.sbx}, "E2b-Sandbox-Port": {"49983"}, "X-Api-Key": {s.e2bKey("bad-other")}}, 401},
		{"no port", http.Header{"E2b-Sandbox-Id": {c.sbx}}, 400},
		{"unknown host name", http.Header{"Host": {"49983-zzz.sandpool.localhost"}}, 502},
	} {
		req, _ := http.NewRequest("GET", s.url+"/files?path=/home/user/keep.txt", nil)
		req.Header = tc.h
		if host := tc.h.Get("Host"); host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), `"code":`) {
			t.Errorf("envd, %s: %d %s, want %d", tc.name, resp.StatusCode, b, tc.status)
		}
	}
	for _, p := range []string{"/../../etc/passwd", "%2F..%2F..%2Fetc%2Fpasswd", "~root/.profile"} {
		if status, b := c.envd("GET", "/files?path="+p, "", nil, nil); status != http.StatusBadRequest {
			t.Errorf("read %s: %d %s", p, status, b)
		}
		if status, b := c.envd("POST", "/files?path="+p, "application/octet-stream", []byte("x"), nil); status != http.StatusBadRequest {
			t.Errorf("write %s: %d %s", p, status, b)
		}
	}
	for _, call := range []struct{ proc, body string }{
		{"filesystem.Filesystem/Stat", `{"path": "/../../etc"}`},
		{"filesystem.Filesystem/ListDir", `{"path": "/../.."}`},
		{"filesystem.Filesystem/Remove", `{"path": "/home/user/../../.."}`},
		{"filesystem.Filesystem/Move", `{"source": "/home/user/keep.txt", "destination": "/../../keep.txt"}`},
		{"filesystem.Filesystem/MakeDir", `{"path": "/../x"}`},
	} {
		if status, e := c.unary(call.proc, call.body); status != http.StatusBadRequest || e["code"] != "invalid_argument" {
			t.Errorf("%s %s: %d %v", call.proc, call.body, status, e)
		}
	}
	if status, e := c.unary("filesystem.Filesystem/Stat", `{"path": "/nope"}`); status != http.StatusNotFound || e["code"] != "not_found" {
		t.Errorf("stat of a missing file: %d %v", status, e)
	}
	if status, e := c.unary("process.Process/SendSignal", `{"process": {"pid": 99999}, "signal": "SIGNAL_SIGKILL"}`); status != http.StatusNotFound || e["code"] != "not_found" {
		t.Errorf("signal to no process: %d %v", status, e)
	}
	_, end := c.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-c", "true"]}}`)
	if len(end) != 0 {
		t.Errorf("a plain start ended with %v", end)
	}
	_, end = c.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-c", "true"], "cwd": "/nope"}}`)
	if e, _ := end["error"].(map[string]any); e["code"] != "invalid_argument" {
		t.Errorf("a start in a missing cwd ended with %v", end)
	}
	_, end = c.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-c", "true"]}}`+"x")
	if e, _ := end["error"].(map[string]any); e["code"] == nil {
		t.Errorf("a malformed start ended with %v", end)
	}
	_, end = c.stream("process.Process/Start", `{"process": {"cmd": "/bin/true"}}`,
		http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("nobody-here:"))}})
	if e, _ := end["error"].(map[string]any); e["code"] != "unauthenticated" {
		t.Errorf("start as an unknown user: %v", end)
	}

	// Nothing changed: one sandbox, the file as it was.
	if status, b := c.envd("GET", "/files?path=/home/user/keep.txt", "", nil, nil); status != http.StatusOK || string(b) != "kept" {
		t.Fatalf("the file after all that: %d %q", status, b)
	}
	list, err := s.client(key).ListSandboxes(context.Background(), client.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("sandboxes after bad creates: %+v %v", list, err)
	}
}

// A create for a template with a warm pool is served from the pool, with
// the create's environment and metadata; a kill gives the sandbox back,
// and the next session starts without them.
func TestE2BPool(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	key := s.e2bKey("pooled")
	native := s.client(key)
	if _, err := s.client("").AddTemplate(ctx, client.TemplateRequest{Name: "warm", From: "base", Hooks: client.Hooks{Setup: "echo set up > /tmp/ready"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := native.CreatePool(ctx, client.PoolConfig{Name: "warm", Template: "warm", MinIdle: 2, MaxTotal: 2}); err != nil {
		t.Fatal(err)
	}
	defer native.DeletePool(context.Background(), "warm")
	waitIdle := func(n int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			p, err := native.GetPool(ctx, "warm")
			if err == nil && p.Idle >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool never had %d idle: %+v %v", n, p, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitIdle(2)
	c := &e2bCall{t: t, s: s, key: key}
	create := func(body string) (id, token string) {
		t.Helper()
		status, b := c.api("POST", "/v2/sandboxes", body)
		var sb map[string]any
		json.Unmarshal(b, &sb)
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, b)
		}
		return sb["sandboxID"].(string), sb["envdAccessToken"].(string)
	}
	run := func(id, token, line string) string {
		t.Helper()
		c.sbx, c.token = id, token
		msgs, end := c.stream("process.Process/Start", `{"process": {"cmd": "/bin/bash", "args": ["-c", `+strconv.Quote(line)+`]}}`)
		if len(end) != 0 {
			t.Fatalf("run %q: %v", line, end)
		}
		var out string
		for _, m := range msgs {
			if d, ok := m["event"].(map[string]any)["data"].(map[string]any); ok {
				b, _ := base64.StdEncoding.DecodeString(d["stdout"].(string))
				out += string(b)
			}
		}
		return out
	}

	id, token := create(`{"templateID": "warm", "metadata": {"who": "first"}, "envVars": {"SESSION": "one"}, "timeout": 60}`)
	sb, err := native.GetSandbox(ctx, "sb_"+id)
	if err != nil || sb.Pool != "warm" || sb.Metadata["who"] != "first" {
		t.Fatalf("the create was not served from the pool: %+v %v", sb, err)
	}
	if out := run(id, token, "echo $SESSION; cat /tmp/ready"); out != "one\nset up\n" {
		t.Fatalf("in the pooled sandbox: %q", out)
	}
	status, b := c.api("GET", "/v2/sandboxes?metadata="+url.QueryEscape("who=first"), "")
	if status != http.StatusOK || !strings.Contains(string(b), id) {
		t.Fatalf("listed by its metadata: %d %s", status, b)
	}
	// Kill gives it back to the pool, where it is reset.
	if status, b := c.api("DELETE", "/sandboxes/"+id, ""); status != http.StatusNoContent {
		t.Fatalf("kill: %d %s", status, b)
	}
	if status, _ := c.api("GET", "/sandboxes/"+id, ""); status != http.StatusNotFound {
		t.Fatalf("a released sandbox is still the caller's: %d", status)
	}
	if _, err := native.GetSandbox(ctx, "sb_"+id); err != nil {
		t.Fatalf("the released sandbox is gone rather than back in its pool: %v", err)
	}
	waitIdle(2)
	// The next sessions (both idle sandboxes, one of them the first
	// one) start without the first's environment and metadata, and its
	// old token opens nothing.
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		nid, ntoken := create(`{"templateID": "warm", "timeout": 60}`)
		seen[nid] = true
		if out := run(nid, ntoken, "echo [$SESSION]"); out != "[]\n" {
			t.Fatalf("a later session sees %q", out)
		}
		if sb, _ := native.GetSandbox(ctx, "sb_"+nid); len(sb.Metadata) != 0 || sb.Pool != "warm" {
			t.Fatalf("a later session: %+v", sb)
		}
		if nid == id && ntoken == token {
			t.Fatal("a sandbox's new session has its old token")
		}
	}
	if !seen[id] {
		t.Fatalf("the released sandbox %s was not handed out again (got %v)", id, seen)
	}
	c.sbx, c.token = id, token
	if status, _ := c.envd("GET", "/health", "", nil, nil); status != http.StatusUnauthorized {
		t.Fatalf("the first session's token after it ended: %d", status)
	}
	// With the pool empty (fail_fast), a create is a new sandbox.
	cid, _ := create(`{"templateID": "warm", "timeout": 60}`)
	if sb, err := native.GetSandbox(ctx, "sb_"+cid); err != nil || sb.Pool != "" {
		t.Fatalf("with the pool empty: %+v %v", sb, err)
	}
	for sid := range seen {
		c.api("DELETE", "/sandboxes/"+sid, "")
	}
	c.api("DELETE", "/sandboxes/"+cid, "")
}
