package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/client"
)

// Bad requests get the documented error and change nothing.
func TestBadRequests(t *testing.T) {
	s := startServer(t, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	sbPath := "/v1/sandboxes/" + sb.ID
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     string
	}{
		{name: "malformed JSON", method: "POST", path: "/v1/sandboxes", body: `{"template":`, status: 400, code: "bad_request"},
		{name: "unknown field", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","colour":"red"}`, status: 400, code: "bad_request"},
		{name: "wrong type", method: "POST", path: "/v1/sandboxes", body: `{"template":["base"]}`, status: 400, code: "bad_request"},
		{name: "two values", method: "POST", path: "/v1/sandboxes", body: `{"template":"base"}{}`, status: 400, code: "bad_request"},
		{name: "negative memory", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","limits":{"memory_bytes":-1}}`, status: 422, code: "invalid"},
		{name: "negative cpus", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","limits":{"cpus":-1}}`, status: 422, code: "invalid"},
		{name: "negative timeout", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","timeout":-5}`, status: 422, code: "invalid"},
		{name: "no template", method: "POST", path: "/v1/sandboxes", body: `{}`, status: 422, code: "invalid"},
		{name: "unknown template", method: "POST", path: "/v1/sandboxes", body: `{"template":"nope"}`, status: 404, code: "not_found"},
		{name: "body too large", method: "POST", path: "/v1/sandboxes", body: `{"template":"` + strings.Repeat("x", 2<<20) + `"}`, status: 413, code: "too_large"},
		{name: "huge header", method: "GET", path: "/v1/sandboxes", header: map[string]string{"X-Big": strings.Repeat("x", 256<<10)}, status: 431},
		{name: "exec without command", method: "POST", path: sbPath + "/exec", body: `{}`, status: 422, code: "invalid"},
		{name: "exec unknown field", method: "POST", path: sbPath + "/exec", body: `{"command":"ls"}`, status: 400, code: "bad_request"},
		{name: "exec negative timeout", method: "POST", path: sbPath + "/exec", body: `{"cmd":["true"],"timeout":-1}`, status: 422, code: "invalid"},
		{name: "write outside", method: "PUT", path: sbPath + "/files?path=../../../../etc/evil", body: "x", status: 422, code: "invalid"},
		{name: "write outside, absolute", method: "PUT", path: sbPath + "/files?path=/tmp/../../evil", body: "x", status: 422, code: "invalid"},
		{name: "read outside", method: "GET", path: sbPath + "/files?path=/../etc/shadow", status: 422, code: "invalid"},
		{name: "no path", method: "GET", path: sbPath + "/files", status: 422, code: "invalid"},
		{name: "rename outside", method: "POST", path: sbPath + "/files/rename", body: `{"from":"/etc/hostname","to":"/../../x"}`, status: 422, code: "invalid"},
		{name: "mkdir outside", method: "POST", path: sbPath + "/files/mkdir", body: `{"path":"/a/../../b"}`, status: 422, code: "invalid"},
		{name: "bad mode", method: "PUT", path: sbPath + "/files?path=/tmp/m&mode=999", body: "x", status: 422, code: "invalid"},
		{name: "bad signal", method: "POST", path: sbPath + "/processes/p1/signal", body: `{"signal":"NOPE"}`, status: 422, code: "invalid"},
		{name: "bad status filter", method: "GET", path: "/v1/sandboxes?status=sleeping", status: 422, code: "invalid"},
		{name: "unknown sandbox", method: "GET", path: "/v1/sandboxes/sb_nope", status: 404, code: "not_found"},
		{name: "unknown route", method: "GET", path: "/v1/nothing", status: 404, code: "not_found"},
		{name: "bad tenant", method: "POST", path: "/v1/keys", body: `{"tenant":"Not OK!"}`, status: 422, code: "invalid"},
		{name: "empty env name", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","env":{"":"x"}}`, status: 422, code: "invalid"},
		{name: "env name with =", method: "POST", path: "/v1/sandboxes", body: `{"template":"base","env":{"A=B":"x"}}`, status: 422, code: "invalid"},
		{name: "pool env name with =", method: "POST", path: "/v1/pools", body: `{"name":"p","template":"base","env":{"A=B":"x"}}`, status: 422, code: "invalid"},
		{name: "rename a directory into itself", method: "POST", path: sbPath + "/files/rename", body: `{"from":"/tmp","to":"/tmp/x","user":"root"}`, status: 422, code: "invalid"},
		{name: "overwrite /etc/passwd as the user", method: "PUT", path: sbPath + "/files?path=/etc/passwd", body: "x", status: 403, code: "permission_denied"},
		{name: "build a template with a failing setup", method: "POST", path: "/v1/templates", body: `{"name":"bad","from":"base","setup":"exit 4","build":true}`, status: 422, code: "setup_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+s.adminKey)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.code == "" {
				return
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("body %s, want code %s", body, tc.code)
			}
		})
	}
	// Nothing changed: one sandbox, running, no file written anywhere.
	list, err := c.ListSandboxes(ctx, client.ListOptions{Statuses: []string{"all"}})
	if err != nil || len(list) != 1 || list[0].Status != "running" {
		t.Fatalf("sandboxes after bad requests: %+v %v", list, err)
	}
	if pools, err := c.ListPools(ctx); err != nil || len(pools) != 0 {
		t.Fatalf("pools after bad requests: %+v %v", pools, err)
	}
	if tpls, err := c.ListTemplates(ctx); err != nil || len(tpls) != 1 {
		t.Fatalf("templates after bad requests: %+v %v", tpls, err)
	}
	if res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"head", "-1", "/etc/passwd"}}); err != nil || string(res.Stdout) != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("/etc/passwd after bad requests: %q %v", res.Stdout, err)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "for p in /etc/evil /evil /x /b /tmp/m /a; do test -e $p && echo $p; done; true"})
	if err != nil || len(res.Stdout) != 0 {
		t.Fatalf("files after bad requests: %q %v", res.Stdout, err)
	}
	for _, p := range []string{"/etc/evil", "/evil", "/x", "/b"} {
		if _, err := osStat(p); err == nil {
			t.Errorf("%s exists on the host", p)
		}
	}
}
