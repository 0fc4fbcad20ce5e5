package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/fsys"
	"github.com/sandpool/sandpool/internal/sandbox"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestDecodeRefusesBadJSON(t *testing.T) {
	for _, body := range []string{
		``,
		`{`,
		`{"template": 5}`,
		`{"template": "base", "colour": "red"}`,
		`{"template": "base"} {"template": "base"}`,
		`{"template": "base", "limits": {"memory": 5}}`,
		`[]`,
	} {
		var req sandbox.CreateRequest
		if err := decodeBytes([]byte(body), &req); !errors.Is(err, errBadRequest) {
			t.Errorf("decode %q: %v, want a bad request", body, err)
		}
	}
	var req sandbox.CreateRequest
	if err := decodeBytes([]byte(`{"template":"base","limits":{"memory_bytes":1048576}}`+"\n"), &req); err != nil || req.Limits.MemoryBytes != 1<<20 {
		t.Fatalf("good body: %+v %v", req, err)
	}
}

func TestExecRequestSpec(t *testing.T) {
	for _, tc := range []struct {
		req ExecRequest
		ok  bool
	}{
		{ExecRequest{Cmd: []string{"true"}}, true},
		{ExecRequest{Cmd: []string{"cat"}, Stdin: "x"}, true},
		{ExecRequest{Cmd: []string{"cat"}, StdinBase64: "eA=="}, true},
		{ExecRequest{Cmd: []string{"cat"}, StdinBase64: "not base64!"}, false},
		{ExecRequest{Cmd: []string{"cat"}, Stdin: "x", StdinBase64: "eA=="}, false},
		{ExecRequest{Cmd: []string{"true"}, Timeout: -1}, false},
		{ExecRequest{Cmd: []string{"true"}, Timeout: 1e12}, false},
	} {
		_, _, err := tc.req.spec(false)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("spec(%+v): %v", tc.req, err)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{`15`: 15, `"15"`: 15, `"TERM"`: 15, `"sigint"`: 2, `"SIGKILL"`: 9} {
		got, err := parseSignal(json.RawMessage(in))
		if err != nil || int(got) != want {
			t.Errorf("parseSignal(%s) = %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{`0`, `65`, `-1`, `""`, `"NOPE"`, `null`, `{}`, `1.5`} {
		if _, err := parseSignal(json.RawMessage(in)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("parseSignal(%s): %v, want invalid", in, err)
		}
	}
}

// FuzzDecode feeds arbitrary bodies to every request decoder and the checks
// after them: none may panic, and whatever they accept is valid.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"template":"base"}`,
		`{"template":"base","limits":{"cpus":0.5,"memory_bytes":-1},"env":{"A":"b"},"metadata":{"k":"v"},"timeout":30}`,
		`{"cmd":["echo","hi"],"stdin_base64":"aGk=","timeout":1.5,"stream":true}`,
		`{"shell":"ls","env":{"":""},"cwd":"../..","user":"nobody"}`,
		`{"signal":"SIGTERM"}`, `{"signal":9}`,
		`{"from":"/a","to":"../../etc/passwd"}`,
		`{"path":"/x","parents":true,"mode":511}`,
		"\x00", `{"template":"\u0000"}`, `{"timeout":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var create sandbox.CreateRequest
		if decodeBytes(body, &create) == nil {
			_ = create.Validate()
		}
		var exec ExecRequest
		if decodeBytes(body, &exec) == nil {
			if spec, _, err := exec.spec(false); err == nil && spec.Timeout < 0 {
				t.Fatalf("accepted a negative timeout: %+v", exec)
			}
		}
		var sig struct {
			Signal json.RawMessage `json:"signal"`
		}
		if decodeBytes(body, &sig) == nil {
			if n, err := parseSignal(sig.Signal); err == nil && (n <= 0 || n > 64) {
				t.Fatalf("accepted signal %d", n)
			}
		}
		var mv struct {
			From string `json:"from"`
			To   string `json:"to"`
		}
		if decodeBytes(body, &mv) == nil {
			for _, p := range []string{mv.From, mv.To} {
				clean, err := fsys.CleanPath(p)
				if err == nil && (!strings.HasPrefix(clean, "/") || strings.Contains(clean+"/", "/../") || strings.ContainsRune(clean, 0)) {
					t.Fatalf("CleanPath(%q) = %q escapes or is not clean", p, clean)
				}
			}
		}
	})
}
