package e2b

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func TestParseMetadata(t *testing.T) {
	tests := []struct {
		query string // as it comes on the wire
		want  map[string]string
		bad   bool
	}{
		// What the JS SDK sent for {user: 'a b', 'k=': 'v&'} (recorded).
		{query: "metadata=user%3Da%252520b%26k%25253D%3Dv%252526", want: map[string]string{"user": "a b", "k=": "v&"}},
		{query: "metadata=app%3Dx", want: map[string]string{"app": "x"}},
		{query: "metadata=user%3Da%2Bb", want: map[string]string{"user": "a b"}}, // an older client's form escaping
		{query: "", want: nil},
		{query: "metadata=%3Dv", bad: true},
		{query: "metadata=a%3D%25zz", bad: true},
	}
	for _, tc := range tests {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseMetadata(q.Get("metadata"))
		if tc.bad {
			if err == nil || !errors.Is(err, errBadRequest) {
				t.Errorf("%q: %v, %v; want a bad request", tc.query, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.query, diff)
		}
	}
}

func TestRoute(t *testing.T) {
	s := &Server{cfg: Config{Domain: "sandpool.localhost"}}
	tests := []struct {
		host    string
		headers map[string]string
		id      string
		port    int
		routed  bool
		bad     error
	}{
		{host: "127.0.0.1:7423"},
		{host: "localhost"},
		{host: "api.example.com"},
		{host: "sandpool.localhost"},
		{host: "49983-abc123.sandpool.localhost", id: "sb_abc123", port: 49983, routed: true},
		{host: "8000-abc123.sandpool.localhost:7423", id: "sb_abc123", port: 8000, routed: true},
		{host: "8000-ABC123.Sandpool.Localhost", id: "sb_abc123", port: 8000, routed: true},
		{host: "x.8000-abc.sandpool.localhost"},
		{host: "abc123.sandpool.localhost", routed: true, bad: errBadRequest},
		{host: "99999-abc.sandpool.localhost", routed: true, bad: errBadRequest},
		{host: "80-a_b.sandpool.localhost", routed: true, bad: errGone},
		{host: "127.0.0.1", headers: map[string]string{"E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "49983"}, id: "sb_abc", port: 49983, routed: true},
		{host: "127.0.0.1", headers: map[string]string{"E2b-Sandbox-Id": "abc"}, routed: true, bad: errBadRequest},
		{host: "127.0.0.1", headers: map[string]string{"E2b-Sandbox-Port": "1"}, routed: true, bad: errBadRequest},
		{host: "127.0.0.1", headers: map[string]string{"E2b-Sandbox-Id": "../x", "E2b-Sandbox-Port": "1"}, routed: true, bad: errGone},
		{host: "127.0.0.1", headers: map[string]string{"E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "0"}, routed: true, bad: errBadRequest},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/health", nil)
		r.Host = tc.host
		for k, v := range tc.headers {
			r.Header.Set(k, v)
		}
		id, port, routed, err := s.route(r)
		if routed != tc.routed || (tc.bad == nil) != (err == nil) || (tc.bad != nil && !errors.Is(err, tc.bad)) {
			t.Errorf("%s %v: routed %v, %v; want %v, %v", tc.host, tc.headers, routed, err, tc.routed, tc.bad)
			continue
		}
		if err == nil && (id != tc.id || port != tc.port) {
			t.Errorf("%s %v: %s:%d, want %s:%d", tc.host, tc.headers, id, port, tc.id, tc.port)
		}
	}
}

// FuzzRoute: no host name or header makes the router panic, and what it
// routes names a sandbox id in form and a port in range.
func FuzzRoute(f *testing.F) {
	s := &Server{cfg: Config{Domain: "sandpool.localhost"}}
	f.Add("49983-abc.sandpool.localhost", "", "")
	f.Add("127.0.0.1", "abc", "8000")
	f.Add("-.sandpool.localhost", "", "")
	f.Fuzz(func(t *testing.T, host, hid, hport string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		if hid != "" {
			r.Header.Set("E2b-Sandbox-Id", hid)
		}
		if hport != "" {
			r.Header.Set("E2b-Sandbox-Port", hport)
		}
		id, port, routed, err := s.route(r)
		if routed && err == nil {
			if _, ok := fromE2B(toE2B(id)); !ok || !strings.HasPrefix(id, idPrefix) || port < 1 || port > 65535 {
				t.Fatalf("routed to %q:%d", id, port)
			}
		}
	})
}

func TestResolvePath(t *testing.T) {
	u := user{name: "user", home: "/home/user"}
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: "/home/user"},
		{in: "~", want: "/home/user"},
		{in: "~/a/b", want: "/home/user/a/b"},
		{in: "a.txt", want: "/home/user/a.txt"},
		{in: "../../etc/passwd", want: "/etc/passwd"}, // inside the sandbox still
		{in: "/tmp/../etc", want: "/etc"},
		{in: "/", want: "/"},
		{in: "~root/x", bad: true},
		{in: "/../../x", bad: true},
		{in: "../../../x", bad: true},
		{in: "a\x00b", bad: true},
	}
	for _, tc := range tests {
		got, err := resolvePath(tc.in, u)
		if tc.bad {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("resolvePath(%q) = %q, %v; want invalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("resolvePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// Signed /files URLs: made as the SDKs make them (sha256 of
// path:operation:user:token[:expiry], base64 without padding).
func TestSignature(t *testing.T) {
	s := &Server{cfg: Config{Secret: "cluster-secret"}}
	sb := sandbox.Sandbox{ID: "sb_abc", Uses: 2}
	tok := s.accessToken(sb)
	sign := func(p, op, user, tok, exp string) string {
		raw := p + ":" + op + ":" + user + ":" + tok
		if exp != "" {
			raw += ":" + exp
		}
		sum := sha256.Sum256([]byte(raw))
		return url.QueryEscape("v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "="))
	}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	tests := []struct {
		name, method, query string
		ok                  bool
	}{
		{"read", "GET", "path=/a.txt&signature=" + sign("/a.txt", "read", "", tok, ""), true},
		{"read as user", "GET", "path=a.txt&username=root&signature=" + sign("a.txt", "read", "root", tok, ""), true},
		{"write", "POST", "path=/a.txt&signature=" + sign("/a.txt", "write", "", tok, ""), true},
		{"expiring", "GET", "path=/a.txt&signature_expiration=" + future + "&signature=" + sign("/a.txt", "read", "", tok, future), true},
		{"expired", "GET", "path=/a.txt&signature_expiration=" + past + "&signature=" + sign("/a.txt", "read", "", tok, past), false},
		{"a read's signature used to write", "POST", "path=/a.txt&signature=" + sign("/a.txt", "read", "", tok, ""), false},
		{"another path", "GET", "path=/b.txt&signature=" + sign("/a.txt", "read", "", tok, ""), false},
		{"another user", "GET", "path=/a.txt&username=root&signature=" + sign("/a.txt", "read", "", tok, ""), false},
		{"another session's token", "GET", "path=/a.txt&signature=" + sign("/a.txt", "read", "", s.accessToken(sandbox.Sandbox{ID: "sb_abc", Uses: 1}), ""), false},
		{"expiry taken away", "GET", "path=/a.txt&signature=" + sign("/a.txt", "read", "", tok, future), false},
		{"no signature", "GET", "path=/a.txt&signature=", false},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, "/files?"+tc.query, nil)
		err := s.authorizeSandbox(r, sb)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, errUnauthorized)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The token itself, in either header, opens everything; nothing else
	// does.
	for h, ok := range map[string]bool{"X-Access-Token": true, "E2B-Traffic-Access-Token": true, "Authorization": false} {
		r := httptest.NewRequest("GET", "/process.Process/List", nil)
		r.Header.Set(h, tok)
		if err := s.authorizeSandbox(r, sb); (err == nil) != ok {
			t.Errorf("token in %s: %v", h, err)
		}
	}
}

// The error table: every kind of the layers below maps to what the SDKs
// branch on, on each surface.
func TestKinds(t *testing.T) {
	tests := []struct {
		err     error
		api     int
		rpc     connect.Code
		envdAPI int
	}{
		{errdefs.Userf(errdefs.ErrNotFound, "x"), 404, connect.CodeNotFound, 404},
		{errdefs.Userf(errdefs.ErrInvalid, "x"), 400, connect.CodeInvalidArgument, 400},
		{errdefs.Userf(errdefs.ErrExists, "x"), 409, connect.CodeAlreadyExists, 409},
		{errdefs.Userf(errdefs.ErrConflict, "x"), 409, connect.CodeFailedPrecondition, 409},
		{errdefs.Userf(errdefs.ErrPermission, "x"), 403, connect.CodePermissionDenied, 403},
		{sandbox.ErrCapacity, 429, connect.CodeResourceExhausted, 429},
		{errShuttingDown, 503, connect.CodeUnavailable, 503},
		{errUnauthorized, 401, connect.CodeUnauthenticated, 401},
		{errGone, 404, connect.CodeUnavailable, 502},
		{&errdefs.StateError{Sandbox: "sb_x", Err: errors.New("agent gone")}, 409, connect.CodeUnavailable, 502},
		{errors.New("disk on fire"), 500, connect.CodeInternal, 500},
	}
	for _, tc := range tests {
		api, rpc, envdAPI, _ := kindOf(tc.err)
		if api != tc.api || rpc != tc.rpc || envdAPI != tc.envdAPI {
			t.Errorf("%v: %d %v %d, want %d %v %d", tc.err, api, rpc, envdAPI, tc.api, tc.rpc, tc.envdAPI)
		}
	}
}

func TestIDs(t *testing.T) {
	if got := toE2B("sb_06bvk3p2d1e7cbx0q8h9m4s2ta"); got != "06bvk3p2d1e7cbx0q8h9m4s2ta" {
		t.Errorf("toE2B = %q", got)
	}
	for in, want := range map[string]string{"06bvk3": "sb_06bvk3", "": "", "SB": "", "a-b": "", "a/b": "", "sb_x": ""} {
		got, ok := fromE2B(in)
		if got != want || ok != (want != "") {
			t.Errorf("fromE2B(%q) = %q, %v", in, got, ok)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{"gzip": true, "gzip, deflate": true, "deflate, GZIP;q=0.5": true, "gzip;q=0": false, "identity": false, "": false, "br": false} {
		r := httptest.NewRequest("GET", "/files", nil)
		r.Header.Set("Accept-Encoding", h)
		if got := acceptsGzip(r); got != want {
			t.Errorf("Accept-Encoding %q: %v", h, got)
		}
	}
}

func TestEnvdRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/process.Process/Start":         "/process.Process/Start",
		"/filesystem.Filesystem/ListDir": "/filesystem.Filesystem/ListDir",
		"/files":                         "GET /files",
		"/health":                        "GET /health",
		"/process.Process/" + strings.Repeat("x", 100): "other",
		"/anything/else": "other",
	} {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if got := envdRoute(r); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}
