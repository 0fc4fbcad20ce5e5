package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/sandbox"
)

// The terminal: a WebSocket from the page (xterm.js) to a shell on a
// pseudo-terminal in the sandbox. The browser's first message proves the
// page belongs to the session ({"csrf", "rows", "cols"}); then binary
// messages are keystrokes one way and the terminal's output the other,
// and a text message {"rows", "cols"} resizes it. The shell is a
// foreground process of the connection: it ends when the page closes it,
// the session ends, or the server stops, and the socket closes when the
// shell exits.

const (
	terminalHello   = 10 * time.Second // for the first message
	terminalMaxRead = 1 << 20          // a message from the browser (a paste)
	terminalTag     = "dashboard-terminal"
)

// terminalShell runs the sandbox's bash as a login shell, or sh without it.
var terminalShell = []string{"/bin/sh", "-c", `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`}

// termMessage is a control message from the page.
type termMessage struct {
	CSRF string `json:"csrf,omitempty"`
	Rows int    `json:"rows"`
	Cols int    `json:"cols"`
}

// size is the message's terminal size, within what a screen can show.
func (m termMessage) size() (proc.Size, error) {
	if m.Rows < 1 || m.Cols < 1 || m.Rows > 1000 || m.Cols > 1000 {
		return proc.Size{}, fmt.Errorf("terminal size %dx%d: want 1 to 1000 each way", m.Cols, m.Rows)
	}
	return proc.Size{Rows: uint16(m.Rows), Cols: uint16(m.Cols)}, nil
}

func (s *Server) terminal(w http.ResponseWriter, r *http.Request, sess *session) error {
	id := r.PathValue("id")
	sb, err := s.local(r.Context(), sess, id)
	if err != nil {
		return err // before the upgrade: an ordinary error page
	}
	if sb.Status != sandbox.StatusRunning && sb.Status != sandbox.StatusPaused {
		return errdefs.Userf(errdefs.ErrConflict, "the terminal needs a running sandbox; %s is %s", id, sb.Status)
	}
	// Accept refuses a page of another origin (cross-site WebSocket
	// hijacking); the cookie is SameSite=Strict besides.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(terminalMaxRead)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // the session or the server ending ends the terminal
		select {
		case <-sess.Done():
			c.Close(websocket.StatusPolicyViolation, "signed out")
		case <-s.ctx.Done():
			c.Close(websocket.StatusGoingAway, "the server is stopping")
		case <-ctx.Done():
		}
	}()

	hello, err := readHello(ctx, c)
	if err == nil && !sess.checkCSRF(hello.CSRF) {
		err = errCSRF
	}
	var size proc.Size
	if err == nil {
		size, err = hello.size()
	}
	if err != nil {
		c.Close(websocket.StatusPolicyViolation, closeReason(err))
		return nil
	}

	stdin, feed := io.Pipe()
	defer stdin.Close()
	out := &wsWriter{ctx: ctx, c: c}
	p, err := s.svc.Exec(ctx, sess.tenant, id, proc.Spec{Cmd: terminalShell, PTY: &size, Tag: terminalTag,
		Env: map[string]string{"TERM": "xterm-256color", "COLORTERM": "truecolor"}}, proc.Stdio{Stdin: stdin, Stdout: out})
	if err != nil {
		status, title := statusFor(err)
		s.log.Info("dashboard terminal refused", "sandbox", id, "status", status, "err", err)
		c.Close(websocket.StatusInternalError, closeReason(fmt.Errorf("%s: %w", title, err)))
		return nil
	}
	s.log.Info("dashboard terminal opened", "sandbox", id, "tenant", sess.tenant, "process", p.ID())

	var wg sync.WaitGroup
	wg.Go(func() {
		defer feed.Close()
		s.pump(ctx, c, feed, sess.tenant, id, p.ID())
		cancel() // the page went away: the shell goes too
		p.Close()
	})
	st, err := p.Wait()
	reason := fmt.Sprintf("the shell exited (%d)", st.Code)
	if err != nil && ctx.Err() == nil {
		reason = closeReason(err)
	}
	c.Close(websocket.StatusNormalClosure, reason)
	cancel()
	wg.Wait()
	return nil
}

func readHello(ctx context.Context, c *websocket.Conn) (termMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, terminalHello)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return termMessage{}, err
	}
	var m termMessage
	if typ != websocket.MessageText || json.Unmarshal(b, &m) != nil {
		return termMessage{}, errors.New("the first message must be {csrf, rows, cols}")
	}
	return m, nil
}

// pump passes the page's messages on: keystrokes to the shell, sizes to
// its terminal; it returns when the page closes the socket.
func (s *Server) pump(ctx context.Context, c *websocket.Conn, feed io.Writer, tenant, id, procID string) {
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if _, err := feed.Write(b); err != nil {
				return
			}
			continue
		}
		var m termMessage
		if json.Unmarshal(b, &m) != nil {
			continue // not a size: ignored
		}
		if size, err := m.size(); err == nil {
			if err := s.svc.ResizePTY(ctx, tenant, id, procID, size); err != nil && ctx.Err() == nil {
				s.log.Warn("dashboard terminal resize failed", "sandbox", id, "err", err)
			}
		}
	}
}

// wsWriter sends what the shell writes as binary messages.
type wsWriter struct {
	ctx context.Context
	c   *websocket.Conn
}

func (w *wsWriter) Write(p []byte) (int, error) {
	if err := w.c.Write(w.ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// closeReason fits a message into a close frame (at most 123 bytes).
func closeReason(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = strings.ToValidUTF8(s[:117], "") + "..."
	}
	return s
}
