package mcpserver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandpool/sandpool/client"
)

var testCfg = Config{}.withDefaults()

func TestRunCommandArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args runCommandArgs
		want client.ExecRequest
		err  string // part of the message; "" for none
	}{
		{name: "argv", args: runCommandArgs{Argv: []string{"ls", "-la"}},
			want: client.ExecRequest{Cmd: []string{"ls", "-la"}, Timeout: 60}},
		{name: "shell with everything", args: runCommandArgs{Shell: "make test", Cwd: "src", Env: map[string]string{"A": "1"}, Timeout: 0.5},
			want: client.ExecRequest{Shell: "make test", Cwd: "/home/user/src", Env: map[string]string{"A": "1"}, Timeout: 0.5}},
		{name: "absolute cwd is cleaned", args: runCommandArgs{Shell: "pwd", Cwd: "/tmp/../var/"},
			want: client.ExecRequest{Shell: "pwd", Cwd: "/var", Timeout: 60}},
		{name: "nothing to run", args: runCommandArgs{}, err: "argv"},
		{name: "blank shell", args: runCommandArgs{Shell: "  "}, err: "argv"},
		{name: "both", args: runCommandArgs{Argv: []string{"true"}, Shell: "true"}, err: "not both"},
		{name: "empty program", args: runCommandArgs{Argv: []string{""}}, err: "argv[0]"},
		{name: "negative timeout", args: runCommandArgs{Shell: "true", Timeout: -1}, err: "timeout"},
		{name: "timeout over an hour", args: runCommandArgs{Shell: "true", Timeout: 3601}, err: "timeout"},
		{name: "bad env name", args: runCommandArgs{Shell: "true", Env: map[string]string{"A=B": "c"}}, err: "environment"},
		{name: "NUL in cwd", args: runCommandArgs{Shell: "true", Cwd: "a\x00b"}, err: "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.args.request(testCfg)
			checkErr(t, err, tc.err)
			if tc.err == "" {
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("request (-want +got):\n%s", d)
				}
			}
		})
	}
}

// checkErr checks that err is a userError saying want, or nil for "".
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	var ue *userError
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("error %v, want one saying %q", err, want)
	case want != "" && !errors.As(err, &ue):
		t.Fatalf("error %T %v is not a userError", err, err)
	}
}

func TestRunCodeArgs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        runCodeArgs
		wantProgram string
		wantTimeout time.Duration
		err         string
	}{
		{name: "python", args: runCodeArgs{Language: "python", Code: "print(1)"}, wantProgram: "python3", wantTimeout: time.Minute},
		{name: "node with timeout", args: runCodeArgs{Language: "node", Code: "1", Timeout: 2}, wantProgram: "node", wantTimeout: 2 * time.Second},
		{name: "bash", args: runCodeArgs{Language: "bash", Code: "echo"}, wantProgram: "bash", wantTimeout: time.Minute},
		{name: "unknown language", args: runCodeArgs{Language: "ruby", Code: "1"}, err: "python, bash, node"},
		{name: "language by program name", args: runCodeArgs{Language: "python3", Code: "1"}, err: "language"},
		{name: "no code", args: runCodeArgs{Language: "python", Code: "\n "}, err: "empty"},
		{name: "bad timeout", args: runCodeArgs{Language: "bash", Code: "x", Timeout: -2}, err: "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, timeout, err := tc.args.check(testCfg)
			checkErr(t, err, tc.err)
			if tc.err == "" && (in.program != tc.wantProgram || timeout != tc.wantTimeout) {
				t.Errorf("got %s, %v; want %s, %v", in.program, timeout, tc.wantProgram, tc.wantTimeout)
			}
		})
	}
}

func TestFileArgs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     writeFileArgs
		wantPath string
		wantData string
		err      string
	}{
		{name: "relative text", args: writeFileArgs{Path: "a/b.txt", Content: "hi"}, wantPath: "/home/user/a/b.txt", wantData: "hi"},
		{name: "absolute", args: writeFileArgs{Path: "/tmp//x", Content: "", Encoding: "text"}, wantPath: "/tmp/x"},
		{name: "base64", args: writeFileArgs{Path: "/bin.dat", Content: "AAEC/w==", Encoding: "base64"}, wantPath: "/bin.dat", wantData: "\x00\x01\x02\xff"},
		{name: "bad base64", args: writeFileArgs{Path: "x", Content: "!!", Encoding: "base64"}, err: "base64"},
		{name: "bad encoding", args: writeFileArgs{Path: "x", Encoding: "hex"}, err: "encoding"},
		{name: "no path", args: writeFileArgs{Content: "x"}, err: "path is empty"},
	} {
		t.Run("write "+tc.name, func(t *testing.T) {
			p, data, err := tc.args.data()
			checkErr(t, err, tc.err)
			if tc.err == "" && (p != tc.wantPath || string(data) != tc.wantData) {
				t.Errorf("got %q %q, want %q %q", p, data, tc.wantPath, tc.wantData)
			}
		})
	}
	if _, err := (readFileArgs{Path: "x", Encoding: "utf-16"}).check(); err == nil {
		t.Error("read_file took encoding utf-16")
	}
	if p, err := (readFileArgs{Path: "notes.md"}).check(); err != nil || p != "/home/user/notes.md" {
		t.Errorf("read_file path: %q %v", p, err)
	}
	if p, err := (listFilesArgs{}).check(); err != nil || p != homeDir {
		t.Errorf("list_files default: %q %v", p, err)
	}
	checkErr(t, sandboxIDArgs{}.check(), "sandbox_id is required")
}

func TestCreateSandboxArgs(t *testing.T) {
	req, err := createSandboxArgs{Timeout: 600, Env: map[string]string{"K": "v"}}.request()
	if err != nil || req.Template != "base" || req.Timeout != 600 || req.Env["K"] != "v" || req.Metadata["mcp"] != "created" {
		t.Fatalf("request: %+v %v", req, err)
	}
	_, err = createSandboxArgs{Timeout: -1}.request()
	checkErr(t, err, "timeout")
	_, err = createSandboxArgs{Env: map[string]string{"": "x"}}.request()
	checkErr(t, err, "environment")
	// The network: none said is the server's default; an allow list alone
	// is an allowlist; a deny alone says nothing of the mode.
	if req.Network != nil {
		t.Errorf("no network asked: %+v", req.Network)
	}
	req, err = createSandboxArgs{Allow: []string{"pypi.org"}}.request()
	if err != nil || req.Network == nil || req.Network.Egress != "allowlist" || req.Network.Allow[0] != "pypi.org" {
		t.Errorf("allow alone: %+v %v", req.Network, err)
	}
	req, err = createSandboxArgs{Egress: "none"}.request()
	if err != nil || req.Network == nil || req.Network.Egress != "none" {
		t.Errorf("egress none: %+v %v", req.Network, err)
	}
	_, err = createSandboxArgs{Deny: []string{"10.0.0.0/8"}}.request()
	checkErr(t, err, "deny needs egress")
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("the zero Config: %v", err)
	}
	for _, c := range []Config{
		{Pool: "Bad Pool"}, {CommandTimeout: 2 * time.Hour}, {MaxOutputBytes: 10}, {MaxReadBytes: -1},
		{KeepAlive: time.Millisecond}, {SessionTimeout: -time.Second},
	} {
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "mcp: ") {
			t.Errorf("%+v: %v, want an error naming the setting", c, err)
		}
	}
}

// Every tool's schema is an object that says what each argument is, and
// takes no arguments it does not know.
func TestToolSchemas(t *testing.T) {
	s, err := newServer(Config{Pool: "p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// newServer registered the tools; inputSchema refuses a property
	// without a description. Check the enums reached the schema too.
	sc, err := inputSchema[runCodeArgs](map[string]string{"sandbox_id": "x", "language": "x", "code": "x", "timeout": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Type != "object" || sc.AdditionalProperties == nil || !cmp.Equal(sc.Required, []string{"language", "code"}) {
		t.Fatalf("run_code schema: type %q, required %v, additional %v", sc.Type, sc.Required, sc.AdditionalProperties)
	}
	if _, err := inputSchema[runCodeArgs](map[string]string{"code": "x"}); err == nil {
		t.Fatal("a schema with undescribed properties was accepted")
	}
}
