package linux_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/errdefs"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

func TestExecBasics(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})

	tests := []struct {
		name       string
		spec       proc.Spec
		stdin      string
		wantOut    string
		wantErr    string
		wantCode   int
		wantSignal string
	}{
		{name: "argv", spec: proc.Spec{Cmd: []string{"echo", "hello", "world"}}, wantOut: "hello world\n"},
		{name: "separate streams", spec: proc.Spec{Shell: "echo out; echo err >&2; exit 3"}, wantOut: "out\n", wantErr: "err\n", wantCode: 3},
		{name: "stdin", spec: proc.Spec{Cmd: []string{"tr", "a-z", "A-Z"}}, stdin: "shout\n", wantOut: "SHOUT\n"},
		{name: "env", spec: proc.Spec{Shell: "echo $GREETING $HOME $USER", Env: map[string]string{"GREETING": "hi"}}, wantOut: "hi /home/user user\n"},
		{name: "default cwd is home", spec: proc.Spec{Cmd: []string{"pwd"}}, wantOut: "/home/user\n"},
		{name: "cwd", spec: proc.Spec{Cmd: []string{"pwd"}, Cwd: "/tmp"}, wantOut: "/tmp\n"},
		{name: "root", spec: proc.Spec{Cmd: []string{"id", "-u"}, User: "root"}, wantOut: "0\n"},
		{name: "numeric user", spec: proc.Spec{Cmd: []string{"id", "-u"}, User: "4242"}, wantOut: "4242\n"},
		{name: "killed by signal", spec: proc.Spec{Shell: "kill -TERM $$"}, wantCode: 143, wantSignal: "SIGTERM"},
		{name: "relative path to program", spec: proc.Spec{Cmd: []string{"./true"}, Cwd: "/usr/bin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin []byte
			if tc.stdin != "" {
				stdin = []byte(tc.stdin)
			}
			res, err := tryRun(r, id, tc.spec, stdin)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stdout != tc.wantOut || res.Stderr != tc.wantErr || res.Code != tc.wantCode || res.Signal != tc.wantSignal {
				t.Fatalf("got %+v, want out %q err %q code %d signal %q", res, tc.wantOut, tc.wantErr, tc.wantCode, tc.wantSignal)
			}
		})
	}
}

func TestExecBadInput(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	tests := []struct {
		name string
		spec proc.Spec
		kind error
	}{
		{"missing command", proc.Spec{Cmd: []string{"no-such-program"}}, errdefs.ErrNotFound},
		{"missing absolute", proc.Spec{Cmd: []string{"/nope/prog"}}, errdefs.ErrNotFound},
		{"not executable", proc.Spec{Cmd: []string{"/etc/passwd"}}, errdefs.ErrNotFound},
		{"empty", proc.Spec{}, errdefs.ErrInvalid},
		{"both cmd and shell", proc.Spec{Cmd: []string{"true"}, Shell: "true"}, errdefs.ErrInvalid},
		{"missing cwd", proc.Spec{Cmd: []string{"true"}, Cwd: "/nope"}, errdefs.ErrNotFound},
		{"relative cwd", proc.Spec{Cmd: []string{"true"}, Cwd: "tmp"}, errdefs.ErrInvalid},
		{"escaping cwd", proc.Spec{Cmd: []string{"true"}, Cwd: "/../.."}, errdefs.ErrInvalid},
		{"unknown user", proc.Spec{Cmd: []string{"true"}, User: "mallory"}, errdefs.ErrInvalid},
		{"uid out of range", proc.Spec{Cmd: []string{"true"}, User: "70000"}, errdefs.ErrInvalid},
		{"bad env name", proc.Spec{Cmd: []string{"true"}, Env: map[string]string{"A=B": "c"}}, errdefs.ErrInvalid},
		{"negative timeout", proc.Spec{Cmd: []string{"true"}, Timeout: -time.Second}, errdefs.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryRun(r, id, tc.spec, nil)
			var ue *errdefs.UserError
			if !errors.As(err, &ue) || !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want a user error of kind %v", err, tc.kind)
			}
			if errdefs.IsStateError(err) {
				t.Fatalf("user error reported as a sandbox state error: %v", err)
			}
		})
	}
	// The sandbox lives on after user errors.
	if out := sh(t, r, id, "echo fine").Stdout; out != "fine\n" {
		t.Fatalf("got %q", out)
	}
	if _, err := r.Exec(context.Background(), "sb_nope", proc.Spec{Cmd: []string{"true"}}, proc.Stdio{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("exec in unknown sandbox: %v", err)
	}
}

func TestExecTimeout(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	res := run(t, r, id, proc.Spec{Shell: "echo started; sleep 30", Timeout: 300 * time.Millisecond})
	if !res.TimedOut || res.Signal != "SIGKILL" || res.Stdout != "started\n" {
		t.Fatalf("got %+v", res)
	}
	// The whole process group went: no sleep is left.
	if out := sh(t, r, id, "ps -eo args | grep -c '^sleep 30' || true").Stdout; strings.TrimSpace(out) != "0" {
		t.Fatalf("sleep survived the timeout: %q", out)
	}
}

// A timeout ends what the exec put in the background too: in its group,
// in a group of its own (setpgid), in a session of its own (setsid), and
// a child whose parent died.
func TestExecTimeoutKillsBackground(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	other, err := r.Exec(context.Background(), id, proc.Spec{Shell: "exec sleep 401", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	other.Close() // a background process runs on
	script := `
sleep 301 &
python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(302)' &
setsid sleep 303 &
sh -c 'sleep 304 & exit 0'
nohup sleep 305 >/dev/null 2>&1 &
echo started
sleep 306`
	res := run(t, r, id, proc.Spec{Shell: script, Timeout: time.Second})
	if !res.TimedOut || res.Stdout != "started\n" {
		t.Fatalf("got %+v", res)
	}
	out := sh(t, r, id, "ps -eo args | grep '^sleep 30[0-9]\\|time.sleep(302)' | grep -v grep || true").Stdout
	if strings.TrimSpace(out) != "" {
		t.Fatalf("survived the exec's timeout:\n%s", out)
	}
	// Another exec's background process is untouched.
	if out := sh(t, r, id, "ps -eo args | grep -c '^sleep 401'").Stdout; strings.TrimSpace(out) != "1" {
		t.Fatalf("another exec's process was killed: %q", out)
	}
}

// Output arrives while the process runs, not only at exit.
func TestExecStreams(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	pr, pw := io.Pipe()
	stdinR, stdinW := io.Pipe()
	p, err := r.Exec(context.Background(), id, proc.Spec{Shell: "echo ready; read line; echo got $line; exec sleep 30"},
		proc.Stdio{Stdin: stdinR, Stdout: pw})
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(pr)
	if line, _ := br.ReadString('\n'); line != "ready\n" {
		t.Fatalf("first line %q", line)
	}
	io.WriteString(stdinW, "ping\n")
	if line, _ := br.ReadString('\n'); line != "got ping\n" {
		t.Fatalf("second line %q", line)
	}
	// A signal reaches the running process. It is sent again until the
	// process ends: a signal that lands while the shell is between its
	// own handler and exec is lost inside the shell, not in sandpool.
	go io.Copy(io.Discard, pr)
	done := make(chan struct{})
	signalled := make(chan error, 1)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := p.Signal(syscall.SIGINT); err != nil {
				signalled <- err
				return
			}
			select {
			case <-done:
				signalled <- nil
				return
			case <-tick.C:
			}
		}
	}()
	st, err := p.Wait()
	close(done)
	if serr := <-signalled; serr != nil && !errors.Is(serr, errdefs.ErrNotFound) && !errors.Is(serr, errdefs.ErrInvalid) {
		t.Fatalf("signal: %v", serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if st.Signal != "SIGINT" {
		t.Fatalf("got %+v, want killed by SIGINT", st)
	}
	pw.Close()
	stdinW.Close() // frees the goroutine that copies stdin
}

func TestBackgroundProcesses(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx := context.Background()

	p, err := r.Exec(ctx, id, proc.Spec{Shell: "echo start; read x; echo got $x; echo end >&2", Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	procID := p.ID()
	p.Close() // detach: a background process goes on

	ps, err := r.Processes(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].ID != procID || !ps[0].Running || !ps[0].Background {
		t.Fatalf("processes: %+v", ps)
	}
	// Reattach: the kept output is replayed, stdin can be given.
	var out, errb bytes.Buffer
	a, err := r.Attach(ctx, id, procID, proc.Stdio{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 0 || out.String() != "start\ngot hello\n" || errb.String() != "end\n" {
		t.Fatalf("attach: %+v out %q err %q", st, out.String(), errb.String())
	}
	// It is listed as exited with its code; attaching again replays all.
	ps, _ = r.Processes(ctx, id)
	if len(ps) != 1 || ps[0].Running || ps[0].Exit == nil || ps[0].Exit.Code != 0 {
		t.Fatalf("after exit: %+v", ps)
	}
	out.Reset()
	a, err = r.Attach(ctx, id, procID, proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(); err != nil || out.String() != "start\ngot hello\n" {
		t.Fatalf("second attach: %v %q", err, out.String())
	}

	// Kill a running background process by signal.
	p, err = r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "60"}, Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := r.Signal(ctx, id, p.ID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		ps, _ := r.Processes(ctx, id)
		for _, pi := range ps {
			if pi.ID == p.ID() {
				return !pi.Running && pi.Exit.Signal == "SIGKILL"
			}
		}
		return false
	})
	// Stdin in pieces, from separate calls, then closed.
	p, err = r.Exec(ctx, id, proc.Spec{Cmd: []string{"cat"}, Background: true}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	must(t, r.WriteStdin(ctx, id, p.ID(), strings.NewReader("abc"), false))
	must(t, r.WriteStdin(ctx, id, p.ID(), strings.NewReader("def\n"), true))
	out.Reset()
	a, err = r.Attach(ctx, id, p.ID(), proc.Stdio{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := a.Wait(); err != nil || st.Code != 0 || out.String() != "abcdef\n" {
		t.Fatalf("cat: %+v %v %q", st, err, out.String())
	}
	if err := r.WriteStdin(ctx, id, p.ID(), strings.NewReader("late"), false); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("stdin after close: %v", err)
	}
	if _, err := r.Attach(ctx, id, "p999", proc.Stdio{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("attach to unknown process: %v", err)
	}
	if err := r.Signal(ctx, id, "p999", syscall.SIGKILL); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("signal unknown process: %v", err)
	}
}

// A foreground process dies with its caller's stream.
func TestForegroundKilledOnClose(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	ctx, cancel := context.WithCancel(context.Background())
	p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"sleep", "77"}}, proc.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	p.Close()
	waitFor(t, func() bool {
		return strings.TrimSpace(sh(t, r, id, "ps -eo args | grep -c '^sleep 77' || true").Stdout) == "0"
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
