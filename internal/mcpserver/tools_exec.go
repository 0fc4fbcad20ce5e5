package mcpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandpool/sandpool/client"
)

// commandOutput is a finished command, as structured content.
type commandOutput struct {
	SandboxID       string `json:"sandbox_id"`
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal,omitempty"`
	TimedOut        bool   `json:"timed_out,omitempty"`
	OOMKilled       bool   `json:"oom_killed,omitempty"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	DurationMs      int64  `json:"duration_ms"`
}

func (t *tools) runCommand(c *call, a runCommandArgs) *mcp.CallToolResult {
	req, err := a.request(t.s.cfg)
	if err != nil {
		return toolError("run_command", err)
	}
	id, err := t.target(c, a.SandboxID)
	if err != nil {
		return toolError("run_command", err)
	}
	out, err := t.exec(c, id, req)
	if err != nil {
		return t.failed(c, "run_command", id, err)
	}
	return commandResult(out, req.Timeout)
}

func (t *tools) runCode(c *call, a runCodeArgs) *mcp.CallToolResult {
	in, timeout, err := a.check(t.s.cfg)
	if err != nil {
		return toolError("run_code", err)
	}
	id, err := t.target(c, a.SandboxID)
	if err != nil {
		return toolError("run_code", err)
	}
	file := "/tmp/mcp-run-" + strings.ToLower(rand.Text()) + in.ext
	if _, err := c.ss.c.WriteFile(c.ctx, id, file, strings.NewReader(a.Code), client.WriteOptions{MakeParents: true}); err != nil {
		return t.failed(c, "run_code", id, err)
	}
	defer func() { // best effort: /tmp is the sandbox's own
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 10*time.Second)
		defer cancel()
		_ = c.ss.c.Remove(ctx, id, file, false)
	}()
	req := client.ExecRequest{Cmd: []string{in.program, file}, Env: maps.Clone(in.env), Timeout: timeout.Seconds()}
	out, err := t.exec(c, id, req)
	if isNotFound(err) {
		// The sandbox was there a moment ago: the interpreter is what is
		// missing (unless the sandbox went meanwhile, which failed tells).
		if sb, gerr := c.ss.c.GetSandbox(c.ctx, id); gerr == nil {
			return toolError("run_code", fmt.Errorf("this sandbox's template (%s) has no %s interpreter: %q is not on its PATH (%s). "+
				"Use another language, or a sandbox from a template that has it", sb.Template, a.Language, in.program, describe(err)))
		}
	}
	if err != nil {
		return t.failed(c, "run_code", id, err)
	}
	return commandResult(out, req.Timeout)
}

// executed is a command's end and what it printed.
type executed struct {
	sandbox        string
	exit           client.ExitStatus
	stdout, stderr *headTail
	duration       time.Duration
}

// exec runs req in sandbox id to its end, keeping the beginning and end
// of its output, and sending what it prints as progress notifications
// when the client asked for progress.
func (t *tools) exec(c *call, id string, req client.ExecRequest) (*executed, error) {
	start := time.Now()
	st, err := c.ss.c.ExecStream(c.ctx, id, req)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	out := &executed{sandbox: id, stdout: newHeadTail(t.s.cfg.MaxOutputBytes), stderr: newHeadTail(t.s.cfg.MaxOutputBytes)}
	progress := newProgress(c)
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the command's output ended before it did (the server stopped?)")
		}
		if err != nil {
			if c.ctx.Err() != nil {
				return nil, c.ctx.Err()
			}
			return nil, err
		}
		switch ev.Type {
		case "stdout":
			_, _ = out.stdout.Write(ev.Data) // never fails
			progress.send("", ev.Data)
		case "stderr":
			_, _ = out.stderr.Write(ev.Data) // never fails
			progress.send("[stderr] ", ev.Data)
		case "exit":
			out.exit = *ev.Exit
			out.duration = time.Since(start)
			return out, nil
		}
	}
}

// commandResult tells a model how a command ended. Anything but exit 0
// is an error result (with the output, which says why).
func commandResult(e *executed, timeout float64) *mcp.CallToolResult {
	o := commandOutput{SandboxID: e.sandbox, ExitCode: e.exit.ExitCode, Signal: e.exit.Signal, TimedOut: e.exit.TimedOut,
		OOMKilled: e.exit.OOMKilled, Stdout: e.stdout.String(), Stderr: e.stderr.String(),
		StdoutTruncated: e.stdout.Truncated(), StderrTruncated: e.stderr.Truncated(), DurationMs: e.duration.Milliseconds()}
	var b strings.Builder
	failed := true
	switch {
	case o.TimedOut:
		fmt.Fprintf(&b, "Timed out: killed after %g seconds (give a longer timeout, or run it in the background "+
			"with nohup ... & and poll). Output until then:\n", timeout)
	case o.OOMKilled:
		b.WriteString("Killed: the sandbox ran out of memory. Output until then:\n")
	case o.Signal != "":
		fmt.Fprintf(&b, "Killed by signal %s.\n", o.Signal)
	case o.ExitCode != 0:
		fmt.Fprintf(&b, "Exit code %d.\n", o.ExitCode)
	default:
		failed = false
		b.WriteString("Exit code 0.\n")
	}
	section := func(name, s string) {
		if s == "" {
			return
		}
		fmt.Fprintf(&b, "--- %s ---\n%s", name, s)
		if !strings.HasSuffix(s, "\n") {
			b.WriteByte('\n')
		}
	}
	section("stdout", o.Stdout)
	section("stderr", o.Stderr)
	if o.Stdout == "" && o.Stderr == "" {
		b.WriteString("(no output)\n")
	}
	if o.StdoutTruncated || o.StderrTruncated {
		b.WriteString("(Output was cut in the middle: redirect it to a file and read parts of it, e.g. with grep or tail.)\n")
	}
	res := text(b.String(), o)
	res.IsError = failed
	return res
}

// progress sends a command's output as progress notifications, if the
// call carried a progress token; the progress is the bytes printed.
type progress struct {
	c     *call
	token any
	sent  float64
}

// maxProgressMessage bounds the text of one notification.
const maxProgressMessage = 4 << 10

func newProgress(c *call) *progress {
	return &progress{c: c, token: c.req.Params.GetProgressToken()}
}

func (p *progress) send(prefix string, data []byte) {
	if p.token == nil || len(data) == 0 {
		return
	}
	p.sent += float64(len(data))
	msg := data
	if len(msg) > maxProgressMessage {
		msg = append(bytes.Clone(msg[:maxProgressMessage]), "..."...)
	}
	// Best effort: a client that cannot take a notification still gets
	// the result.
	_ = p.c.req.Session.NotifyProgress(p.c.ctx, &mcp.ProgressNotificationParams{ProgressToken: p.token,
		Progress: p.sent, Message: prefix + strings.ToValidUTF8(string(msg), "\uFFFD")})
}
