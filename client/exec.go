package client

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// ExecRequest is a process to run in a sandbox.
type ExecRequest struct {
	Cmd   []string          `json:"cmd,omitempty"`
	Shell string            `json:"shell,omitempty"` // run with /bin/sh -c
	Env   map[string]string `json:"env,omitempty"`
	Cwd   string            `json:"cwd,omitempty"`
	User  string            `json:"user,omitempty"`
	// Stdin is given to the process, then EOF.
	Stdin []byte `json:"-"`
	// Timeout in seconds kills the process group; 0 means none.
	Timeout float64 `json:"timeout,omitempty"`
	// PTY runs the process on a terminal of this size; its output comes
	// as stdout.
	PTY *TermSize `json:"pty,omitempty"`
	// Tag names the process: "tag:NAME" then works wherever a process id
	// does.
	Tag string `json:"tag,omitempty"`
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

type execBody struct {
	ExecRequest
	StdinBase64 string `json:"stdin_base64,omitempty"`
	Stream      bool   `json:"stream,omitempty"`
}

func (r ExecRequest) body(stream bool) []byte {
	b := execBody{ExecRequest: r, Stream: stream}
	if len(r.Stdin) > 0 {
		b.StdinBase64 = base64.StdEncoding.EncodeToString(r.Stdin)
	}
	return jsonBody(b)
}

// ExitStatus tells how a process ended.
type ExitStatus struct {
	ExitCode  int    `json:"exit_code"`
	Signal    string `json:"signal,omitempty"`
	TimedOut  bool   `json:"timed_out,omitempty"`
	OOMKilled bool   `json:"oom_killed,omitempty"`
}

// ExecResult is a finished command's outcome.
type ExecResult struct {
	ExitStatus
	Stdout          []byte
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
	DurationMs      int64
}

// Exec runs a command to completion and returns its output (each stream
// capped by the server, 16 MiB by default).
func (c *Client) Exec(ctx context.Context, id string, req ExecRequest) (*ExecResult, error) {
	var raw struct {
		ExitStatus
		Stdout          string `json:"stdout"`
		Stderr          string `json:"stderr"`
		StdoutBase64    string `json:"stdout_base64"`
		StderrBase64    string `json:"stderr_base64"`
		StdoutTruncated bool   `json:"stdout_truncated"`
		StderrTruncated bool   `json:"stderr_truncated"`
		DurationMs      int64  `json:"duration_ms"`
	}
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/exec"), body: req.body(false)}, &raw); err != nil {
		return nil, err
	}
	res := &ExecResult{ExitStatus: raw.ExitStatus, StdoutTruncated: raw.StdoutTruncated,
		StderrTruncated: raw.StderrTruncated, DurationMs: raw.DurationMs}
	var err error
	if res.Stdout, err = textOrB64(raw.Stdout, raw.StdoutBase64); err != nil {
		return nil, err
	}
	if res.Stderr, err = textOrB64(raw.Stderr, raw.StderrBase64); err != nil {
		return nil, err
	}
	return res, nil
}

func textOrB64(text, b64 string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	return []byte(text), nil
}

func sandboxPath(id, rest string) string { return "/v1/sandboxes/" + url.PathEscape(id) + rest }

// Event is one event of a process stream.
type Event struct {
	// Type is "start", "stdout", "stderr" or "exit".
	Type string
	// Process and Pid, for "start".
	Process string
	Pid     int
	// Data, for "stdout" and "stderr".
	Data []byte
	// Exit, for "exit".
	Exit *ExitStatus
}

// Stream is a running process's output, event by event.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
	// Process is the process id, once the start event is read.
	Process string
}

// ExecStream starts a command and streams its output as it is produced.
// Read events with Next until the exit event; Close ends the stream (and
// kills the process).
func (c *Client) ExecStream(ctx context.Context, id string, req ExecRequest) (*Stream, error) {
	h := http.Header{}
	h.Set("Accept", "application/x-ndjson")
	resp, err := c.do(ctx, request{method: "POST", path: sandboxPath(id, "/exec"), body: req.body(true), header: h})
	if err != nil {
		return nil, err
	}
	return newStream(resp.Body), nil
}

func newStream(body io.ReadCloser) *Stream {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &Stream{body: body, sc: sc}
}

// Next returns the next event; io.EOF after the exit event.
func (s *Stream) Next() (Event, error) {
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return Event{}, fmt.Errorf("sandpool: process stream: %w", err)
		}
		return Event{}, io.EOF
	}
	var raw struct {
		Type       string `json:"type"`
		Process    string `json:"process"`
		Pid        int    `json:"pid"`
		Data       string `json:"data"`
		DataBase64 string `json:"data_base64"`
		ExitStatus
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(s.sc.Bytes(), &raw); err != nil {
		return Event{}, fmt.Errorf("sandpool: bad event %q: %w", s.sc.Bytes(), err)
	}
	ev := Event{Type: raw.Type, Process: raw.Process, Pid: raw.Pid}
	switch raw.Type {
	case "start":
		s.Process = raw.Process
	case "stdout", "stderr":
		d, err := textOrB64(raw.Data, raw.DataBase64)
		if err != nil {
			return Event{}, err
		}
		ev.Data = d
	case "exit":
		st := raw.ExitStatus
		ev.Exit = &st
	case "error":
		if raw.Error != nil {
			return Event{}, &APIError{Status: 0, Code: raw.Error.Code, Message: raw.Error.Message}
		}
	}
	return ev, nil
}

// Wait copies output to stdout and stderr (either may be nil) until the
// process exits, and returns how it ended.
func (s *Stream) Wait(stdout, stderr io.Writer) (ExitStatus, error) {
	for {
		ev, err := s.Next()
		if err == io.EOF {
			return ExitStatus{}, fmt.Errorf("sandpool: stream ended before the process did")
		}
		if err != nil {
			return ExitStatus{}, err
		}
		switch ev.Type {
		case "stdout":
			if stdout != nil {
				if _, err := stdout.Write(ev.Data); err != nil {
					return ExitStatus{}, err
				}
			}
		case "stderr":
			if stderr != nil {
				if _, err := stderr.Write(ev.Data); err != nil {
					return ExitStatus{}, err
				}
			}
		case "exit":
			return *ev.Exit, nil
		}
	}
}

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Process describes a process started in a sandbox.
type Process struct {
	ID         string      `json:"id"`
	Pid        int         `json:"pid"`
	Tag        string      `json:"tag,omitempty"`
	Cmd        []string    `json:"cmd"`
	Cwd        string      `json:"cwd,omitempty"`
	PTY        bool        `json:"pty,omitempty"`
	Background bool        `json:"background"`
	Running    bool        `json:"running"`
	StartedAt  time.Time   `json:"started_at"`
	Exit       *ExitStatus `json:"exit,omitempty"`
}

// StartProcess starts a background process; it runs on after this call.
func (c *Client) StartProcess(ctx context.Context, id string, req ExecRequest) (*Process, error) {
	var p Process
	if err := c.call(ctx, request{method: "POST", path: sandboxPath(id, "/processes"), body: req.body(false)}, &p); err != nil {
		return nil, err
	}
	p.Background, p.Running, p.Cmd, p.Tag, p.PTY = true, true, req.Cmd, req.Tag, req.PTY != nil
	return &p, nil
}

// ResizePTY gives the terminal of a process started with PTY a new size.
func (c *Client) ResizePTY(ctx context.Context, id, proc string, size TermSize) error {
	return c.call(ctx, request{method: "POST", path: sandboxPath(id, "/processes/"+url.PathEscape(proc)+"/resize"),
		body: jsonBody(size)}, nil)
}

// ListProcesses lists the processes the sandbox tracks.
func (c *Client) ListProcesses(ctx context.Context, id string) ([]Process, error) {
	var out struct {
		Processes []Process `json:"processes"`
	}
	err := c.call(ctx, request{method: "GET", path: sandboxPath(id, "/processes"), retry: true}, &out)
	return out.Processes, err
}

// Attach streams a process's kept output, then new output until it exits.
func (c *Client) Attach(ctx context.Context, id, proc string) (*Stream, error) {
	resp, err := c.do(ctx, request{method: "GET", path: sandboxPath(id, "/processes/"+url.PathEscape(proc)+"/output")})
	if err != nil {
		return nil, err
	}
	return newStream(resp.Body), nil
}

// WriteStdin sends r to a process's stdin, closing it afterwards if eof.
func (c *Client) WriteStdin(ctx context.Context, id, proc string, r io.Reader, eof bool) error {
	q := url.Values{}
	if eof {
		q.Set("eof", "true")
	}
	return c.call(ctx, request{method: "POST", path: sandboxPath(id, "/processes/"+url.PathEscape(proc)+"/stdin"), query: q, stream: r}, nil)
}

// Signal sends a signal ("SIGTERM", "KILL", "15") to a process's group.
func (c *Client) Signal(ctx context.Context, id, proc, signal string) error {
	return c.call(ctx, request{method: "POST", path: sandboxPath(id, "/processes/"+url.PathEscape(proc)+"/signal"),
		body: jsonBody(map[string]string{"signal": signal})}, nil)
}

// KillAll kills every process of a sandbox but its agent (what a fork bomb
// left, say) and returns how many there were. The sandbox lives on.
func (c *Client) KillAll(ctx context.Context, id string) (int, error) {
	var out struct {
		Killed int `json:"killed"`
	}
	err := c.call(ctx, request{method: "DELETE", path: sandboxPath(id, "/processes")}, &out)
	return out.Killed, err
}
