package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
)

// waitOutput reads a process stream until its stdout holds want.
func waitOutput(tb testing.TB, s *client.Stream, want string) string {
	tb.Helper()
	var out bytes.Buffer
	for !strings.Contains(out.String(), want) {
		ev, err := s.Next()
		if err != nil {
			tb.Fatalf("stream ended (%v) without %q: %q", err, want, out.String())
		}
		if ev.Type == "exit" {
			tb.Fatalf("process exited (%+v) without %q: %q", ev.Exit, want, out.String())
		}
		out.Write(ev.Data)
	}
	return out.String()
}

// The native API's terminal, watch, metrics and ports, through the Go
// client against the real binary.
func TestTerminalWatchMetricsPorts(t *testing.T) {
	s := startServer(t, "")
	key := s.key("native")
	c := s.client(key)
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteSandbox(context.Background(), sb.ID) })

	t.Run("terminal", func(t *testing.T) {
		p, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Shell: `trap 'echo "size $(stty size)"' WINCH; echo ready; read line; echo "got:$line"; until read line; do :; done; exit 4`, // a trapped WINCH may end a read: read again
			PTY: &client.TermSize{Rows: 20, Cols: 70}, Tag: "shell"})
		if err != nil {
			t.Fatal(err)
		}
		list, err := c.ListProcesses(ctx, sb.ID)
		if err != nil || len(list) != 1 || !list[0].PTY || list[0].Tag != "shell" {
			t.Fatalf("processes %+v %v", list, err)
		}
		stream, err := c.Attach(ctx, sb.ID, "tag:shell")
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		waitOutput(t, stream, "ready")
		if err := c.WriteStdin(ctx, sb.ID, p.ID, strings.NewReader("hello\n"), false); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, stream, "got:hello")
		if err := c.ResizePTY(ctx, sb.ID, "tag:shell", client.TermSize{Rows: 41, Cols: 132}); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteStdin(ctx, sb.ID, p.ID, strings.NewReader("\n"), false); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, stream, "size 41 132")
		st, err := stream.Wait(nil, nil)
		if err != nil || st.ExitCode != 4 {
			t.Fatalf("exit %+v %v", st, err)
		}
		if err := c.ResizePTY(ctx, sb.ID, p.ID, client.TermSize{Rows: 0, Cols: 1}); !isCode(err, "invalid") {
			t.Fatalf("a zero size: %v", err)
		}
		// A streamed exec on a terminal.
		res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "tty; echo err >&2", PTY: &client.TermSize{Rows: 5, Cols: 5}})
		if err != nil || !strings.Contains(string(res.Stdout), "/dev/pts/") || !strings.Contains(string(res.Stdout), "err") || len(res.Stderr) != 0 {
			t.Fatalf("exec on a terminal: %+v %v", res, err)
		}
	})

	t.Run("watch", func(t *testing.T) {
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "mkdir -p /home/user/w"}); err != nil {
			t.Fatal(err)
		}
		w, err := c.WatchFiles(ctx, sb.ID, "/home/user/w", client.WatchOptions{Recursive: true})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := c.WriteFile(ctx, sb.ID, "/home/user/w/sub/a.txt", strings.NewReader("a"), client.WriteOptions{MakeParents: true}); err != nil {
			t.Fatal(err)
		}
		want := map[client.FileEvent]bool{{Name: "sub", Op: "create"}: true, {Name: "sub/a.txt", Op: "create"}: true}
		for len(want) > 0 {
			ev, err := w.Next()
			if err != nil {
				t.Fatalf("watch: %v (still waiting for %v)", err, want)
			}
			delete(want, ev)
		}
		if _, err := c.WatchFiles(ctx, sb.ID, "/nope", client.WatchOptions{}); !isCode(err, "not_found") {
			t.Fatalf("watch of a missing directory: %v", err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m, err := c.Metrics(ctx, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.CPUCount != 1 || m.MemTotalBytes != 512<<20 || m.MemUsedBytes <= 0 || m.DiskTotalBytes <= 0 || m.DiskUsedBytes <= 0 {
			t.Fatalf("metrics %+v", m)
		}
		if _, err := s.tenant("other-metrics").Metrics(ctx, sb.ID); !isCode(err, "not_found") {
			t.Fatalf("another tenant's metrics: %v", err)
		}
	})

	t.Run("ports", func(t *testing.T) {
		// An HTTP server that shows what it was sent, and answers an upgrade
		// by echoing bytes (as a WebSocket server would, after its 101).
		server := `import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.headers.get("Upgrade"):
            self.send_response(101); self.send_header("Upgrade", "echo"); self.send_header("Connection", "Upgrade"); self.end_headers()
            self.wfile.flush()
            while True:
                b = self.rfile.read1(65536)
                if not b: return
                self.wfile.write(b.upper()); self.wfile.flush()
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization"), "host": self.headers.get("Host")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8123), H).serve_forever()
`
		if _, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Cmd: []string{"python3", "-c", server}}); err != nil {
			t.Fatal(err)
		}
		base := s.url + "/v1/sandboxes/" + sb.ID + "/ports/8123/"
		var body string
		deadline := time.Now().Add(time.Minute)
		for {
			resp, err := portGet(base+"some/path?q=1", key)
			if err == nil && resp.StatusCode == 200 {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
				break
			}
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 503 || !strings.Contains(string(b), "port_closed") || time.Now().After(deadline) {
					t.Fatalf("port: %d %s", resp.StatusCode, b)
				}
			} else if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(body, `"path": "/some/path?q=1"`) || !strings.Contains(body, `"auth": null`) {
			t.Fatalf("the server in the sandbox saw %s", body)
		}

		// An upgrade: after the 101 the connection is the server's.
		u := strings.TrimPrefix(s.url, "http://")
		conn, err := net.Dial("tcp", u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /v1/sandboxes/"+sb.ID+"/ports/8123/ws HTTP/1.1\r\nHost: "+u+"\r\nAuthorization: Bearer "+key+
			"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		for _, msg := range []string{"hello", "again"} {
			io.WriteString(conn, msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
				t.Fatalf("through the upgrade: %q %v", got, err)
			}
		}

		// Closed ports, bad ports, other tenants.
		for _, tc := range []struct {
			url, key string
			status   int
		}{
			{s.url + "/v1/sandboxes/" + sb.ID + "/ports/8124/", key, 503},
			{s.url + "/v1/sandboxes/" + sb.ID + "/ports/0/", key, 422},
			{s.url + "/v1/sandboxes/" + sb.ID + "/ports/x/", key, 422},
			{base, s.key("other-ports"), 404},
			{base, "", 401},
		} {
			resp, err := portGet(tc.url, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("GET %s: %d, want %d", tc.url, resp.StatusCode, tc.status)
			}
		}
	})
}

func portGet(url, key string) (*http.Response, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return http.DefaultClient.Do(req)
}

func isCode(err error, code string) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Code == code
}

// key makes a key for a new tenant.
func (s *server) key(tenant string) string {
	s.t.Helper()
	k, err := s.client("").CreateKey(context.Background(), tenant, false)
	if err != nil {
		s.t.Fatal(err)
	}
	return k.Secret
}
