package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/store"
)

// hookOutputTail is how much of a failing hook's output its error keeps.
const hookOutputTail = 2048

// ErrSetupFailed: a template's hook failed. The request was fine; the
// template is not.
var ErrSetupFailed = errdefs.New(errdefs.ErrFailed, "setup_failed", "template setup failed")

// HookError is a template hook that failed: why (its exit status, or a
// timeout), and the tail of what it printed.
type HookError struct {
	Template string
	Hook     string // setup, session_setup, session_teardown
	Why      string
	Output   string
}

func (e *HookError) Error() string {
	msg := fmt.Sprintf("template %s: %s failed (%s)", e.Template, e.Hook, e.Why)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// Unwrap makes it an ErrSetupFailed (a 422 with code setup_failed).
func (e *HookError) Unwrap() error { return ErrSetupFailed }

// runHook runs a template hook as root and fails unless it exits 0. Its
// output also goes to progress, if set, as it comes.
func (s *Service) runHook(ctx context.Context, row store.Sandbox, name, script string, timeout time.Duration, progress io.Writer) error {
	tail := &tailBuffer{max: hookOutputTail}
	var out io.Writer = tail
	if progress != nil {
		out = io.MultiWriter(tail, progress)
	}
	out = &lockedWriter{w: out} // stdout and stderr are copied concurrently
	p, err := s.rt.Exec(ctx, row.ID, proc.Spec{Shell: script, User: "root", Cwd: "/", Timeout: timeout, Env: s.sandboxEnv(row)},
		proc.Stdio{Stdout: out, Stderr: out})
	if err != nil {
		return fmt.Errorf("template %s: %s: %w", row.Template, name, err)
	}
	st, err := p.Wait()
	if err != nil {
		return fmt.Errorf("template %s: %s: %w", row.Template, name, err)
	}
	if st.Code != 0 || st.Signal != "" {
		why := fmt.Sprintf("exit status %d", st.Code)
		if st.TimedOut {
			why = "timed out after " + timeout.String()
		}
		return &HookError{Template: row.Template, Hook: name, Why: why, Output: strings.TrimSpace(tail.String())}
	}
	return nil
}

func (s *Service) sandboxEnv(row store.Sandbox) map[string]string {
	var sp spec
	_ = json.Unmarshal([]byte(row.Spec), &sp) // written by us
	return sp.Env
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max  int
	buf  bytes.Buffer
	lost bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > t.max {
		p, t.lost = p[len(p)-t.max:], true
		t.buf.Reset()
	}
	if over := t.buf.Len() + len(p) - t.max; over > 0 {
		t.buf.Next(over)
		t.lost = true
	}
	t.buf.Write(p)
	return n, nil
}

func (t *tailBuffer) String() string {
	if t.lost {
		return "..." + t.buf.String()
	}
	return t.buf.String()
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
