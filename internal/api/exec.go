package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"golang.org/x/sys/unix"
)

// ExecRequest is the body of POST .../exec and .../processes.
type ExecRequest struct {
	Cmd   []string          `json:"cmd,omitempty"`
	Shell string            `json:"shell,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	Cwd   string            `json:"cwd,omitempty"`
	User  string            `json:"user,omitempty"`
	// Stdin (text) or StdinBase64 is given to the process, then EOF.
	Stdin       string `json:"stdin,omitempty"`
	StdinBase64 string `json:"stdin_base64,omitempty"`
	// Timeout in seconds; 0 means none.
	Timeout float64 `json:"timeout,omitempty"`
	// Stream the output as newline-delimited JSON events as it happens
	// (also chosen by Accept: application/x-ndjson).
	Stream bool `json:"stream,omitempty"`
	// PTY runs the process on a terminal of this size: its output comes
	// as stdout, and stdin (or .../stdin of a background process) feeds
	// the terminal.
	PTY *proc.Size `json:"pty,omitempty"`
	// Tag names the process (it can then be given as "tag:NAME" wherever
	// a process id is taken).
	Tag string `json:"tag,omitempty"`
}

func (req ExecRequest) spec(background bool) (proc.Spec, []byte, error) {
	if req.Timeout < 0 || req.Timeout > 30*24*3600 {
		return proc.Spec{}, nil, errdefs.Userf(errdefs.ErrInvalid, "timeout %g out of range: 0 to 2592000 seconds", req.Timeout)
	}
	var stdin []byte
	switch {
	case req.Stdin != "" && req.StdinBase64 != "":
		return proc.Spec{}, nil, errdefs.Userf(errdefs.ErrInvalid, "give stdin or stdin_base64, not both")
	case req.StdinBase64 != "":
		b, err := base64.StdEncoding.DecodeString(req.StdinBase64)
		if err != nil {
			return proc.Spec{}, nil, errdefs.Userf(errdefs.ErrInvalid, "stdin_base64: %v", err)
		}
		stdin = b
	case req.Stdin != "":
		stdin = []byte(req.Stdin)
	}
	return proc.Spec{Cmd: req.Cmd, Shell: req.Shell, Env: req.Env, Cwd: req.Cwd, User: req.User,
		Timeout: time.Duration(req.Timeout * float64(time.Second)), Background: background, PTY: req.PTY, Tag: req.Tag}, stdin, nil
}

// ExecResult is the reply of a buffered exec. Output that is not valid
// UTF-8 comes as *_base64 instead.
type ExecResult struct {
	proc.ExitStatus
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutBase64    string `json:"stdout_base64,omitempty"`
	StderrBase64    string `json:"stderr_base64,omitempty"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	DurationMs      int64  `json:"duration_ms"`
}

// Event is one line of a streamed exec or attach.
type Event struct {
	Type string `json:"type"` // start, stdout, stderr, exit, error
	// start
	Process string `json:"process,omitempty"`
	Pid     int    `json:"pid,omitempty"`
	// stdout, stderr
	Data       string `json:"data,omitempty"`
	DataBase64 string `json:"data_base64,omitempty"`
	// exit
	*proc.ExitStatus
	// error
	Error *streamError `json:"error,omitempty"`
}

// streamError is the error event that ends a stream that failed.
type streamError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func newStreamError(err error) *streamError {
	_, code := statusFor(err)
	if code == "internal" {
		return &streamError{code, "internal error; see the server log"}
	}
	return &streamError{code, err.Error()}
}

// cappedBuffer keeps the first max bytes written.
type cappedBuffer struct {
	buf       []byte
	max       int
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - len(c.buf); room < len(p) {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func textOrBase64(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

func wantsStream(r *http.Request, req ExecRequest) bool {
	return req.Stream || strings.Contains(r.Header.Get("Accept"), "application/x-ndjson")
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, stdin, err := req.spec(false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var stdio proc.Stdio
	if stdin != nil {
		stdio.Stdin = strings.NewReader(string(stdin))
	}
	id := r.PathValue("id")
	tenant := who(r).Tenant
	start := time.Now()
	if wantsStream(r, req) {
		ev := newEventWriter(w)
		stdio.Stdout, stdio.Stderr = ev.output("stdout"), ev.output("stderr")
		p, err := s.svc.Exec(r.Context(), tenant, id, spec, stdio)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		defer p.Close()
		s.followStream(r, ev, p)
		return
	}
	out := &cappedBuffer{max: s.cfg.MaxOutputBytes}
	errb := &cappedBuffer{max: s.cfg.MaxOutputBytes}
	stdio.Stdout, stdio.Stderr = out, errb
	p, err := s.svc.Exec(r.Context(), tenant, id, spec, stdio)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer p.Close()
	st, err := p.Wait()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res := ExecResult{ExitStatus: st, StdoutTruncated: out.truncated, StderrTruncated: errb.truncated,
		DurationMs: time.Since(start).Milliseconds()}
	res.Stdout, res.StdoutBase64 = textOrBase64(out.buf)
	res.Stderr, res.StderrBase64 = textOrBase64(errb.buf)
	writeJSON(w, http.StatusOK, res)
}

// eventWriter writes newline-delimited JSON events, flushing each.
type eventWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newEventWriter(w http.ResponseWriter) *eventWriter {
	return &eventWriter{w: w, rc: http.NewResponseController(w)}
}

func (e *eventWriter) send(ev any) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		e.started = true
		e.w.Header().Set("Content-Type", "application/x-ndjson")
		e.w.Header().Set("X-Content-Type-Options", "nosniff")
		e.w.WriteHeader(http.StatusOK)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return err
	}
	return e.rc.Flush()
}

// outputWriter sends what is written to it as events made by event.
type outputWriter struct {
	e     *eventWriter
	event func(data, dataBase64 string) any
}

// output sends writes as Events of typ (stdout, stderr).
func (e *eventWriter) output(typ string) outputWriter {
	return outputWriter{e, func(data, b64 string) any { return Event{Type: typ, Data: data, DataBase64: b64} }}
}

func (o outputWriter) Write(p []byte) (int, error) {
	if err := o.e.send(o.event(textOrBase64(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// followStream sends start, then output as it comes, then exit (or error).
func (s *Server) followStream(r *http.Request, ev *eventWriter, p proc.Process) {
	if err := ev.send(Event{Type: "start", Process: p.ID(), Pid: p.Pid()}); err != nil {
		return // the client went away; Close kills a foreground process
	}
	st, err := p.Wait()
	if err != nil {
		_ = ev.send(Event{Type: "error", Error: newStreamError(err)}) // best effort: the stream may be gone
		return
	}
	_ = ev.send(Event{Type: "exit", ExitStatus: &st}) // likewise
}

// killAll kills every process of the sandbox but its agent.
func (s *Server) killAll(w http.ResponseWriter, r *http.Request) {
	n, err := s.svc.KillAll(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"killed": n})
}

func (s *Server) startProcess(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, stdin, err := req.spec(true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tenant, id := who(r).Tenant, r.PathValue("id")
	p, err := s.svc.Exec(r.Context(), tenant, id, spec, proc.Stdio{})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p.Close() // detach: a background process goes on
	if stdin != nil {
		if err := s.svc.WriteStdin(r.Context(), tenant, id, p.ID(), strings.NewReader(string(stdin)), true); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": p.ID(), "pid": p.Pid()})
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) {
	ps, err := s.svc.Processes(r.Context(), who(r).Tenant, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if ps == nil {
		ps = []proc.Info{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"processes": ps})
}

// attach streams a process's kept and new output until it exits. Closing
// the stream leaves a background process running.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	ev := newEventWriter(w)
	p, err := s.svc.Attach(r.Context(), who(r).Tenant, r.PathValue("id"), r.PathValue("proc"),
		proc.Stdio{Stdout: ev.output("stdout"), Stderr: ev.output("stderr")})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer p.Close()
	s.followStream(r, ev, p)
}

func (s *Server) stdin(w http.ResponseWriter, r *http.Request) {
	eof, _ := strconv.ParseBool(r.URL.Query().Get("eof")) // absent or unparsable: keep stdin open
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	if err := s.svc.WriteStdin(r.Context(), who(r).Tenant, r.PathValue("id"), r.PathValue("proc"), body, eof); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// resize gives a process's terminal a new size.
func (s *Server) resize(w http.ResponseWriter, r *http.Request) {
	var size proc.Size
	if err := decode(w, r, &size); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.svc.ResizePTY(r.Context(), who(r).Tenant, r.PathValue("id"), r.PathValue("proc"), size); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) signal(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Signal json.RawMessage `json:"signal"`
	}
	if err := decode(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sig, err := parseSignal(req.Signal)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.svc.Signal(r.Context(), who(r).Tenant, r.PathValue("id"), r.PathValue("proc"), sig); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseSignal accepts 15, "15", "TERM" or "SIGTERM".
func parseSignal(raw json.RawMessage) (syscall.Signal, error) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		if n <= 0 || n > 64 {
			return 0, errdefs.Userf(errdefs.ErrInvalid, "signal %d out of range", n)
		}
		return syscall.Signal(n), nil
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil || name == "" {
		return 0, errdefs.Userf(errdefs.ErrInvalid, "signal must be a number or a name like \"SIGTERM\"")
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n <= 64 {
		return syscall.Signal(n), nil
	}
	name = strings.ToUpper(name)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, errdefs.Userf(errdefs.ErrInvalid, "unknown signal %q", name)
}
