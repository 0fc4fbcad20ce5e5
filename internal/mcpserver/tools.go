package mcpserver

import (
	"context"
	"fmt"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// tools are the tools of one mcp.Server: those of sessions whose own
// sandbox comes from pool (or is made from the template, if "").
type tools struct {
	s    *server
	pool string
}

// handler is a tool's implementation: it always answers with a result
// (isError for a failure a model can act on), never a protocol error.
type handler[In any] func(*call, In) *mcp.CallToolResult

// add registers a tool whose arguments are In, described by docs (by
// property), adjusted by adjust if not nil.
func add[In any](t *tools, srv *mcp.Server, tool *mcp.Tool, docs map[string]string, adjust func(*jsonschema.Schema), h handler[In]) error {
	sc, err := inputSchema[In](docs)
	if err != nil {
		return err
	}
	if adjust != nil {
		adjust(sc)
	}
	tool.InputSchema = sc
	mcp.AddTool(srv, tool, func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, any, error) {
		c, end, err := t.s.begin(ctx, req, t.pool)
		if err != nil {
			return toolError(tool.Name, err), nil, nil
		}
		defer end()
		return h(c, in), nil, nil
	})
	return nil
}

func hint(b bool) *bool { return &b }

// size says n bytes the way a person would.
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// register adds the tools to srv.
func (t *tools) register(srv *mcp.Server) error {
	cfg := t.s.cfg
	sandboxID := "The sandbox to use, as returned by create_sandbox or acquire_from_pool. " +
		"Leave it out to use this session's own sandbox: made on first use, its files kept between calls, " +
		"destroyed when the session ends."
	timeout := fmt.Sprintf("Seconds before the command is killed (default %g, at most %g). "+
		"What it printed until then is returned.", cfg.CommandTimeout.Seconds(), maxCommandTimeout.Seconds())
	enum := func(prop string, values ...string) func(*jsonschema.Schema) {
		return func(sc *jsonschema.Schema) {
			for _, v := range values {
				sc.Properties[prop].Enum = append(sc.Properties[prop].Enum, v)
			}
		}
	}
	// Whether a sandbox reaches the internet is its network policy's (the
	// server's default unless create_sandbox says): no hint either way.
	local := &mcp.ToolAnnotations{}
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: hint(false)}

	errs := []error{
		add(t, srv, &mcp.Tool{Name: "create_sandbox", Annotations: local,
			Description: "Create a new isolated Linux sandbox and return its id. You rarely need this: the other tools " +
				"use this session's own sandbox when you give no sandbox_id. Create one to keep separate environments, " +
				"or one that outlives this session, or one with a network of its own. Destroy it with destroy_sandbox when done."},
			map[string]string{
				"template": "Template to make it from (default base: a Linux userland with bash, coreutils and python3).",
				"timeout": "Seconds without activity after which it is paused: files and memory are kept, and the next call " +
					"resumes it. 0 (the default) means never.",
				"env": "Environment variables set for every command run in it.",
				"egress": "Its network: none (no way out), open (the internet) or allowlist (only the host names, " +
					"wildcards such as *.pythonhosted.org, addresses and CIDRs in allow). Default: the server's, " +
					"which list_sandboxes shows as egress.",
				"allow": "With egress allowlist: what it may reach, e.g. [\"pypi.org\", \"files.pythonhosted.org\"].",
				"deny":  "What it may never reach, under open or allowlist.",
			}, enum("egress", "none", "open", "allowlist"), t.createSandbox),
		add(t, srv, &mcp.Tool{Name: "run_command", Annotations: local,
			Description: "Run a command in a sandbox as the unprivileged user 'user' and wait for it to end. Returns its " +
				"exit code, stdout and stderr (long output is cut in the middle, with a note). A non-zero exit or a " +
				"timeout is reported as an error, with the output. Commands start in /home/user; files and installed " +
				"programs stay between calls. Output is sent as progress notifications while it runs."},
			map[string]string{
				"sandbox_id": sandboxID,
				"argv":       "The program and its arguments, run directly without a shell, e.g. [\"ls\", \"-la\", \"/tmp\"]. Give argv or shell.",
				"shell":      "A command line run with /bin/sh -c: pipes, redirections, && and globs work. Give shell or argv.",
				"cwd":        "Working directory: absolute, or relative to /home/user (the default).",
				"env":        "Extra environment variables for this command.",
				"timeout":    timeout,
			}, func(sc *jsonschema.Schema) { // a list, not "list or null"
				sc.Properties["argv"].Types, sc.Properties["argv"].Type = nil, "array"
			}, t.runCommand),
		add(t, srv, &mcp.Tool{Name: "run_code", Annotations: local,
			Description: "Run a program written in Python, Bash or JavaScript (Node.js) in a sandbox and wait for it to " +
				"end: the code is saved to a temporary file and run with python3, bash or node from /home/user. Returns " +
				"exit code, stdout and stderr like run_command. Print what you want to see. A language whose " +
				"interpreter the sandbox's template lacks is an error that says so."},
			map[string]string{
				"sandbox_id": sandboxID,
				"language":   "python (python3), bash, or node (CommonJS; use import() for ES modules).",
				"code":       "The program's source text.",
				"timeout":    timeout,
			}, enum("language", languages...), t.runCode),
		add(t, srv, &mcp.Tool{Name: "write_file", Annotations: &mcp.ToolAnnotations{IdempotentHint: true, OpenWorldHint: hint(false)},
			Description: "Write a file in a sandbox, replacing it if it exists and making missing parent directories."},
			map[string]string{
				"sandbox_id": sandboxID,
				"path":       "Where: absolute, or relative to /home/user.",
				"content":    "What to write: text, or base64 with encoding base64.",
				"encoding":   "text (the default) or base64 (for binary content).",
			}, enum("encoding", "text", "base64"), t.writeFile),
		add(t, srv, &mcp.Tool{Name: "read_file", Annotations: readOnly,
			Description: fmt.Sprintf("Read a file from a sandbox (at most %s: read parts of a larger one with "+
				"run_command and head, tail, sed -n or grep). A file that is not UTF-8 text comes as base64.", size(cfg.MaxReadBytes))},
			map[string]string{
				"sandbox_id": sandboxID,
				"path":       "The file: absolute, or relative to /home/user.",
				"encoding":   "text (the default) or base64.",
			}, enum("encoding", "text", "base64"), t.readFile),
		add(t, srv, &mcp.Tool{Name: "list_files", Annotations: readOnly,
			Description: "List a directory in a sandbox: type, size and name of each entry."},
			map[string]string{
				"sandbox_id": sandboxID,
				"path":       "The directory: absolute, or relative to /home/user (the default).",
			}, nil, t.listFiles),
		add(t, srv, &mcp.Tool{Name: "destroy_sandbox", Annotations: &mcp.ToolAnnotations{DestructiveHint: hint(true), IdempotentHint: true, OpenWorldHint: hint(false)},
			Description: "Destroy a sandbox: its processes and files are gone for good. Destroying this session's own " +
				"sandbox is fine: the next call that needs it makes a fresh one."},
			map[string]string{"sandbox_id": "The sandbox to destroy (list_sandboxes shows them)."}, nil, t.destroySandbox),
		add(t, srv, &mcp.Tool{Name: "list_sandboxes", Annotations: readOnly,
			Description: "List your sandboxes that exist now: id, status, template, and which is this session's own."},
			map[string]string{}, nil, t.listSandboxes),
	}
	if t.pool != "" {
		errs = append(errs,
			add(t, srv, &mcp.Tool{Name: "acquire_from_pool", Annotations: local,
				Description: fmt.Sprintf("Take a ready sandbox from a warm pool (at once; default pool %q) and return its id. "+
					"It is yours until you release it or this session ends.", t.pool)},
				map[string]string{"pool": fmt.Sprintf("The pool (default %q).", t.pool)}, nil, t.acquire),
			add(t, srv, &mcp.Tool{Name: "release", Annotations: &mcp.ToolAnnotations{DestructiveHint: hint(true), OpenWorldHint: hint(false)},
				Description: "Give a sandbox taken from a pool back to it: it is reset (files and processes gone) for its " +
					"next user. Without sandbox_id, gives back this session's own sandbox; the next call takes a fresh one."},
				map[string]string{"sandbox_id": "The pool sandbox to give back (default: this session's own)."}, nil, t.release),
		)
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// target is the sandbox a call works on: the one it names, or the
// session's own (made if it has none).
func (t *tools) target(c *call, id string) (string, error) {
	if id != "" {
		return id, nil
	}
	return c.ss.sandbox(c.ctx, t.s.cfg)
}

// failed is a failed call on sandbox id as a tool result. When it is the
// session's own sandbox and it is gone (destroyed, or timed out while the
// session was away), the session forgets it and the model is told a new
// one comes with the next call.
func (t *tools) failed(c *call, op, id string, err error) *mcp.CallToolResult {
	if isNotFound(err) && id != "" && id == c.ss.ownID() {
		if _, gerr := c.ss.c.GetSandbox(c.ctx, id); isNotFound(gerr) {
			c.ss.forget(id)
			return toolError(op, fmt.Errorf("this session's sandbox %s is gone (destroyed or timed out): "+
				"call again to work in a new one (files of the old one are lost)", id))
		}
	}
	return toolError(op, err)
}

// text is a successful result: text for the model, and the same as
// structured content for programs.
func text(s string, structured any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}, StructuredContent: structured}
}

// sandboxInfo is a sandbox as the tools show it.
type sandboxInfo struct {
	ID       string `json:"sandbox_id"`
	Status   string `json:"status"`
	Template string `json:"template"`
	Pool     string `json:"pool,omitempty"`
	// Egress is its network: none, open or allowlist.
	Egress string `json:"egress,omitempty"`
	// Session: this session's own sandbox.
	Session bool `json:"session,omitempty"`
}

func infoOf(sb *client.Sandbox) sandboxInfo {
	return sandboxInfo{ID: sb.ID, Status: sb.Status, Template: sb.Template, Pool: sb.Pool, Egress: sb.Network.Egress}
}
