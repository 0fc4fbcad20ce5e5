package mcpserver

import (
	"encoding/base64"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/sandpool/sandpool/client"
)

// The tools' arguments. Their JSON schemas are derived from these types;
// the descriptions, written for a model to read, are set in tools.go.
// Each type checks itself: the schema catches wrong types and unknown
// fields, the methods what a schema cannot say.

type createSandboxArgs struct {
	Template string            `json:"template,omitempty"`
	Timeout  int               `json:"timeout,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	// Egress, Allow and Deny are its network policy; all empty: the
	// server's default.
	Egress string   `json:"egress,omitempty"`
	Allow  []string `json:"allow,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// maxSandboxTimeout is the longest inactivity timeout the API takes.
const maxSandboxTimeout = 30 * 24 * 3600

func (a createSandboxArgs) request() (client.CreateSandboxRequest, error) {
	if a.Timeout < 0 || a.Timeout > maxSandboxTimeout {
		return client.CreateSandboxRequest{}, userErrorf("timeout %d out of range: 0 (never) to %d seconds", a.Timeout, maxSandboxTimeout)
	}
	if err := checkEnv(a.Env); err != nil {
		return client.CreateSandboxRequest{}, err
	}
	tpl := a.Template
	if tpl == "" {
		tpl = defaultTemplate
	}
	var network *client.Network
	if a.Egress != "" || len(a.Allow) > 0 || len(a.Deny) > 0 {
		mode := a.Egress
		if mode == "" {
			if len(a.Allow) == 0 {
				return client.CreateSandboxRequest{}, userErrorf("deny needs egress open or allowlist")
			}
			mode = client.EgressAllowlist
		}
		network = &client.Network{Egress: mode, Allow: a.Allow, Deny: a.Deny}
	}
	return client.CreateSandboxRequest{Template: tpl, Timeout: a.Timeout, Env: a.Env, Network: network,
		Metadata: map[string]string{"mcp": "created"}}, nil
}

type runCommandArgs struct {
	SandboxID string            `json:"sandbox_id,omitempty"`
	Argv      []string          `json:"argv,omitempty"`
	Shell     string            `json:"shell,omitempty"`
	Cwd       string            `json:"cwd,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Timeout   float64           `json:"timeout,omitempty"`
}

func (a runCommandArgs) request(cfg Config) (client.ExecRequest, error) {
	switch {
	case len(a.Argv) == 0 && strings.TrimSpace(a.Shell) == "":
		return client.ExecRequest{}, userErrorf("give the command as argv (a list: program, then arguments) or as shell (one command line)")
	case len(a.Argv) > 0 && a.Shell != "":
		return client.ExecRequest{}, userErrorf("give argv or shell, not both")
	case len(a.Argv) > 0 && a.Argv[0] == "":
		return client.ExecRequest{}, userErrorf("argv[0], the program, is empty")
	}
	timeout, err := commandTimeout(a.Timeout, cfg)
	if err != nil {
		return client.ExecRequest{}, err
	}
	if err := checkEnv(a.Env); err != nil {
		return client.ExecRequest{}, err
	}
	req := client.ExecRequest{Cmd: a.Argv, Shell: a.Shell, Env: a.Env, Timeout: timeout.Seconds()}
	if a.Cwd != "" {
		if req.Cwd, err = sandboxPath(a.Cwd); err != nil {
			return client.ExecRequest{}, err
		}
	}
	return req, nil
}

type runCodeArgs struct {
	SandboxID string  `json:"sandbox_id,omitempty"`
	Language  string  `json:"language"`
	Code      string  `json:"code"`
	Timeout   float64 `json:"timeout,omitempty"`
}

// interpreter is how run_code runs a language.
type interpreter struct {
	program string // looked up on the sandbox's PATH
	ext     string
	env     map[string]string
}

var interpreters = map[string]interpreter{
	// Unbuffered, so that output streams as progress while it runs.
	"python": {program: "python3", ext: ".py", env: map[string]string{"PYTHONUNBUFFERED": "1"}},
	"bash":   {program: "bash", ext: ".sh"},
	"node":   {program: "node", ext: ".js"},
}

// languages are run_code's, in the order the schema lists them.
var languages = []string{"python", "bash", "node"}

func (a runCodeArgs) check(cfg Config) (interpreter, time.Duration, error) {
	in, ok := interpreters[a.Language]
	if !ok {
		return interpreter{}, 0, userErrorf("language %q: want one of %s", a.Language, strings.Join(languages, ", "))
	}
	if strings.TrimSpace(a.Code) == "" {
		return interpreter{}, 0, userErrorf("code is empty")
	}
	timeout, err := commandTimeout(a.Timeout, cfg)
	return in, timeout, err
}

type writeFileArgs struct {
	SandboxID string `json:"sandbox_id,omitempty"`
	Path      string `json:"path"`
	Content   string `json:"content"`
	Encoding  string `json:"encoding,omitempty"`
}

// data is the content to write, and the file's path in the sandbox.
func (a writeFileArgs) data() (string, []byte, error) {
	p, err := sandboxPath(a.Path)
	if err != nil {
		return "", nil, err
	}
	switch a.Encoding {
	case "", "text":
		return p, []byte(a.Content), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			return "", nil, userErrorf("content is not valid base64: %v", err)
		}
		return p, b, nil
	}
	return "", nil, userErrorf("encoding %q: want text or base64", a.Encoding)
}

type readFileArgs struct {
	SandboxID string `json:"sandbox_id,omitempty"`
	Path      string `json:"path"`
	Encoding  string `json:"encoding,omitempty"`
}

func (a readFileArgs) check() (string, error) {
	if a.Encoding != "" && a.Encoding != "text" && a.Encoding != "base64" {
		return "", userErrorf("encoding %q: want text or base64", a.Encoding)
	}
	return sandboxPath(a.Path)
}

type listFilesArgs struct {
	SandboxID string `json:"sandbox_id,omitempty"`
	Path      string `json:"path,omitempty"`
}

func (a listFilesArgs) check() (string, error) {
	if a.Path == "" {
		return homeDir, nil
	}
	return sandboxPath(a.Path)
}

type sandboxIDArgs struct {
	SandboxID string `json:"sandbox_id"`
}

func (a sandboxIDArgs) check() error {
	if a.SandboxID == "" {
		return userErrorf("sandbox_id is required")
	}
	return nil
}

type releaseArgs struct {
	SandboxID string `json:"sandbox_id,omitempty"`
}

type acquireArgs struct {
	Pool string `json:"pool,omitempty"`
}

type noArgs struct{}

// commandTimeout is a command's timeout: the default for 0, else what
// was asked within bounds.
func commandTimeout(seconds float64, cfg Config) (time.Duration, error) {
	switch {
	case seconds == 0:
		return cfg.CommandTimeout, nil
	case seconds < 0 || seconds > maxCommandTimeout.Seconds():
		return 0, userErrorf("timeout %g out of range: up to %g seconds", seconds, maxCommandTimeout.Seconds())
	}
	return time.Duration(seconds * float64(time.Second)), nil
}

// sandboxPath is p as an absolute path in the sandbox: a relative one
// is taken from /home/user, where commands start. The API refuses one
// that leaves the sandbox.
func sandboxPath(p string) (string, error) {
	if strings.TrimSpace(p) == "" {
		return "", userErrorf("path is empty")
	}
	if strings.ContainsRune(p, 0) {
		return "", userErrorf("path %q has a NUL byte", p)
	}
	if !path.IsAbs(p) {
		return path.Join(homeDir, p), nil
	}
	return path.Clean(p), nil
}

func checkEnv(env map[string]string) error {
	for k := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return userErrorf("environment variable name %q: want a name without '=' or NUL", k)
		}
	}
	return nil
}

// inputSchema is T's JSON schema, with docs as its properties'
// descriptions.
func inputSchema[T any](docs map[string]string) (*jsonschema.Schema, error) {
	sc, err := jsonschema.For[T](nil)
	if err != nil {
		return nil, err
	}
	for name, doc := range docs {
		p := sc.Properties[name]
		if p == nil {
			return nil, fmt.Errorf("mcp: schema of %T has no property %q", *new(T), name)
		}
		p.Description = doc
	}
	for name, p := range sc.Properties {
		if p.Description == "" {
			return nil, fmt.Errorf("mcp: property %q of %T has no description", name, *new(T))
		}
	}
	return sc, nil
}
