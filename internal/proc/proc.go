// Package proc describes processes run in a sandbox, as every layer sees
// them: what to run (Spec), how it is connected (Stdio), the handle of a
// running one (Process), how it ended (ExitStatus) and what the sandbox
// tracks of it (Info).
package proc

import (
	"io"
	"strconv"
	"syscall"
	"time"
)

// Spec says what process to run.
type Spec struct {
	// Cmd is the argv; Cmd[0] is looked up in PATH. Exactly one of Cmd and
	// Shell is set.
	Cmd []string `json:"cmd,omitempty"`
	// Shell is a command line run with /bin/sh -c.
	Shell string `json:"shell,omitempty"`
	// Env adds to (and overrides) the default environment.
	Env map[string]string `json:"env,omitempty"`
	// Cwd defaults to the user's home directory.
	Cwd string `json:"cwd,omitempty"`
	// User is a name or numeric uid; default "user".
	User string `json:"user,omitempty"`
	// Timeout kills every process the exec started after this long (its
	// process group, and what it started in the background); 0 means none.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Background keeps the process when the caller goes away; its recent
	// output is kept for Attach.
	Background bool `json:"background,omitempty"`
	// NoStdin gives a background process an empty input instead of a
	// stdin that WriteStdin can feed.
	NoStdin bool `json:"no_stdin,omitempty"`
	// PTY runs the process on a pseudo-terminal of this size, as the
	// leader of its session with the terminal as its controlling one. Its
	// output (stdout and stderr together, as a terminal shows them) comes
	// on Stdio.Stdout; Stdio.Stdin, or WriteStdin, feeds the terminal.
	PTY *Size `json:"pty,omitempty"`
	// Tag names the process for callers that find it by tag rather than
	// by id (ByTag).
	Tag string `json:"tag,omitempty"`
}

// Size is a terminal's size in characters.
type Size struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// A tracked process is named by its id ("p3"), or by the reference ByPid
// or ByTag makes, wherever a process id is taken.

// ByPid names the tracked process with this pid inside the sandbox.
func ByPid(pid int) string { return "pid:" + strconv.Itoa(pid) }

// ByTag names the tracked process with this tag (the newest one, if
// several have it).
func ByTag(tag string) string { return "tag:" + tag }

// Stdio connects a process to its caller. A nil Stdin gives the process an
// empty input; nil Stdout or Stderr discard. Like os/exec, a goroutine
// copies Stdin until it returns EOF or an error, even after the process
// has exited: close a reader that might block forever.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Process is a running process started by Exec or Attach.
type Process interface {
	// ID names the process within its sandbox.
	ID() string
	// Pid inside the sandbox.
	Pid() int
	// Signal sends sig to the process group.
	Signal(sig syscall.Signal) error
	// Wait returns when the process has exited and its output is copied.
	Wait() (ExitStatus, error)
	// Close detaches. A foreground process is killed; a background one
	// goes on.
	Close() error
}

// ExitStatus tells how a process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+signal if killed by a signal.
	Code int `json:"exit_code"`
	// Signal that killed the process, if any ("SIGKILL").
	Signal string `json:"signal,omitempty"`
	// TimedOut: the process was killed because its Timeout passed.
	TimedOut bool `json:"timed_out,omitempty"`
	// OOMKilled: the kernel killed a process of the sandbox for exceeding
	// the memory limit while this one ran, and this one died of SIGKILL.
	OOMKilled bool `json:"oom_killed,omitempty"`
}

// Info describes a tracked process.
type Info struct {
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
