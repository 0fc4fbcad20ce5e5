package linux_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// syncBuffer is a bytes.Buffer safe for a process's writer and a reader
// waiting on it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer holds want, failing the test after a
// minute (a bound for a hang, not a timing assertion).
func (b *syncBuffer) waitFor(tb testing.TB, want string) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			tb.Fatalf("no %q in output %q", want, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPTY(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()

	t.Run("a terminal of the size asked for", func(t *testing.T) {
		var out, errb syncBuffer
		p, err := r.Exec(ctx, id, proc.Spec{Shell: "tty; stty size; test -t 0 && test -t 1 && test -t 2 && echo all-terminals; echo to-stderr >&2; echo $TERM; id -u",
			PTY: &proc.Size{Rows: 24, Cols: 91}}, proc.Stdio{Stdout: &out, Stderr: &errb})
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil || st.Code != 0 {
			t.Fatalf("exit %+v %v: %q", st, err, out.String())
		}
		got := out.String()
		for _, want := range []string{"/dev/pts/", "24 91", "all-terminals", "to-stderr", "xterm-256color", "1000"} {
			if !strings.Contains(got, want) {
				t.Errorf("no %q in %q", want, got)
			}
		}
		if errb.String() != "" {
			t.Errorf("stderr of a terminal process: %q", errb.String())
		}
	})

	t.Run("input, resize and the controlling terminal", func(t *testing.T) {
		var out syncBuffer
		pr, pw := io.Pipe()
		defer pw.Close()
		p, err := r.Exec(ctx, id, proc.Spec{Shell: `trap 'echo "size $(stty size)"' WINCH; echo ready; read line; echo "got:$line"; read line; exit 7`,
			PTY: &proc.Size{Rows: 10, Cols: 40}, Background: true}, proc.Stdio{Stdin: pr, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out.waitFor(t, "ready")
		if _, err := pw.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		out.waitFor(t, "got:hello")
		if err := r.ResizePTY(ctx, id, p.ID(), proc.Size{Rows: 33, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		// The shell runs the trap once read returns: give it a line.
		if _, err := pw.Write([]byte("\n")); err != nil {
			t.Fatal(err)
		}
		out.waitFor(t, "size 33 120")
		st, err := p.Wait()
		if err != nil || st.Code != 7 {
			t.Fatalf("exit %+v %v", st, err)
		}
	})

	t.Run("Ctrl-C reaches the foreground program", func(t *testing.T) {
		var out syncBuffer
		p, err := r.Exec(ctx, id, proc.Spec{Shell: "echo ready; sleep 100", PTY: &proc.Size{Rows: 24, Cols: 80}, Background: true},
			proc.Stdio{Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out.waitFor(t, "ready")
		if err := r.WriteStdin(ctx, id, p.ID(), strings.NewReader("\x03"), false); err != nil {
			t.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil || st.Signal != "SIGINT" {
			t.Fatalf("exit %+v %v, want SIGINT", st, err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		if _, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"true"}, PTY: &proc.Size{Rows: 0, Cols: 80}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("zero rows: %v", err)
		}
		p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "100"}, Background: true}, proc.Stdio{})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := r.ResizePTY(ctx, id, p.ID(), proc.Size{Rows: 5, Cols: 5}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("resize a process without a terminal: %v", err)
		}
		if err := r.ResizePTY(ctx, id, "p999", proc.Size{Rows: 5, Cols: 5}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("resize a missing process: %v", err)
		}
		tp, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "100"}, Background: true, PTY: &proc.Size{Rows: 5, Cols: 5}}, proc.Stdio{})
		if err != nil {
			t.Fatal(err)
		}
		tp.Close()
		if err := r.WriteStdin(ctx, id, tp.ID(), strings.NewReader(""), true); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("closing a terminal's input: %v", err)
		}
		for _, ref := range []string{p.ID(), tp.ID()} {
			if err := r.Signal(ctx, id, ref, syscall.SIGKILL); err != nil {
				t.Error(err)
			}
		}
	})
}

func TestProcessRefsAndStdin(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()

	p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "100"}, Background: true, Tag: "web", Cwd: "/tmp"}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	list, err := r.Processes(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var found *proc.Info
	for i := range list {
		if list[i].ID == p.ID() {
			found = &list[i]
		}
	}
	if found == nil || found.Tag != "web" || found.Cwd != "/tmp" || found.Pid != p.Pid() || !found.Running || found.PTY {
		t.Fatalf("listed %+v", found)
	}
	// A tag and a pid name the process wherever an id does.
	if err := r.Signal(ctx, id, proc.ByTag("web"), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := r.Signal(ctx, id, proc.ByPid(p.Pid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{proc.ByTag("nope"), proc.ByPid(99999), "pid:x", "tag:"} {
		if err := r.Signal(ctx, id, ref, syscall.SIGKILL); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("signal %q: %v", ref, err)
		}
	}
	a, err := r.Attach(ctx, id, proc.ByPid(p.Pid()), proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := a.Wait(); err != nil || st.Signal != "SIGKILL" {
		t.Fatalf("killed by pid: %+v %v", st, err)
	}

	// A background process without stdin reads nothing and is done.
	var out syncBuffer
	c, err := r.Exec(ctx, id, proc.Spec{Shell: "cat; echo eof", Background: true, NoStdin: true}, proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Wait(); err != nil || st.Code != 0 || out.String() != "eof\n" {
		t.Fatalf("cat without stdin: %+v %v %q", st, err, out.String())
	}
	if err := r.WriteStdin(ctx, id, c.ID(), strings.NewReader("x"), false); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("stdin of a process started without: %v", err)
	}
}

func TestAttachLive(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()

	var first syncBuffer
	p, err := r.Exec(ctx, id, proc.Spec{Shell: "echo one; read x; echo two", Background: true}, proc.Stdio{Stdout: &first})
	if err != nil {
		t.Fatal(err)
	}
	first.waitFor(t, "one")
	p.Close()
	var live, replay syncBuffer
	lp, err := r.AttachLive(ctx, id, p.ID(), proc.Stdio{Stdout: &live})
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	rp, err := r.Attach(ctx, id, p.ID(), proc.Stdio{Stdout: &replay})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	replay.waitFor(t, "one")
	if err := r.WriteStdin(ctx, id, p.ID(), strings.NewReader("\n"), false); err != nil {
		t.Fatal(err)
	}
	for _, q := range []proc.Process{lp, rp} {
		if st, err := q.Wait(); err != nil || st.Code != 0 {
			t.Fatalf("wait: %+v %v", st, err)
		}
	}
	if live.String() != "two\n" || replay.String() != "one\ntwo\n" {
		t.Fatalf("live %q, replayed %q", live.String(), replay.String())
	}
	// Attaching live to a process that has exited gives its exit at once.
	again, err := r.AttachLive(ctx, id, p.ID(), proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := again.Wait(); err != nil || st.Code != 0 {
		t.Fatalf("live attach after the exit: %+v %v", st, err)
	}
}
