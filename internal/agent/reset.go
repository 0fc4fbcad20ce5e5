package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// devEntries are what init puts in /dev; anything else there was left by
// a session.
var devEntries = map[string]string{
	"null": "", "zero": "", "full": "", "random": "", "urandom": "", "tty": "",
	"pts": "", "shm": "", "mqueue": "",
	"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
	"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
}

// reset ends a session inside the sandbox: every process but this one is
// killed and reaped, the process table is emptied, and the memory-backed
// directories a session can write (/dev/shm, /dev/mqueue) are emptied.
// The reply's Dirty says what is left that only a restart of the sandbox
// clears (System V IPC objects, entries added to /dev); the host checks the
// writable layer itself.
func (s *Server) reset(c *conn) error {
	if os.Getpid() != 1 {
		return replyErr(c, codeInvalid, "reset is only for a sandbox's PID 1")
	}
	if err := killOthers(5 * time.Second); err != nil {
		return replyErr(c, codeInternal, "reset: %v", err)
	}
	// Every process has exited; wait until their outputs are drained and
	// their records final, then forget them.
	s.mu.Lock()
	procs := s.procs
	s.procs = map[string]*process{}
	s.mu.Unlock()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			return replyErr(c, codeInternal, "reset: process %s did not finish", p.id)
		}
	}
	for _, d := range []string{"/dev/shm", "/dev/mqueue"} {
		if err := emptyDir(d); err != nil {
			return replyErr(c, codeInternal, "reset: empty %s: %v", d, err)
		}
	}
	dirty := leftovers(s.devices)
	// A process started while this ran (a call that slipped in) would
	// outlive the session: then only a restart will do.
	if others, err := otherPids(); err != nil || len(others) > 0 {
		dirty = "a process started during the reset"
	}
	return c.sendJSON(frameReply, reply{Dirty: dirty})
}

// killAll kills every process of the sandbox but the agent (what a fork
// bomb left, say) and reports how many there were. Processes the agent
// tracks end as killed by SIGKILL.
func (s *Server) killAll(c *conn) error {
	if os.Getpid() != 1 {
		return replyErr(c, codeInvalid, "kill-all is only for a sandbox's PID 1")
	}
	procs, err := readProcs()
	if err != nil {
		return replyErr(c, codeInternal, "kill-all: %v", err)
	}
	n := 0
	for _, p := range procs {
		if !p.zombie {
			n++
		}
	}
	if err := killOthers(10 * time.Second); err != nil {
		return replyErr(c, codeInternal, "kill-all: %v", err)
	}
	return c.sendJSON(frameReply, reply{N: int64(n)})
}

// killOthers kills every process of the PID namespace but PID 1 and waits
// until the reaper has collected them all.
func killOthers(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for delay := 50 * time.Microsecond; ; delay = min(delay*2, 5*time.Millisecond) {
		others, err := otherPids()
		if err != nil {
			return err
		}
		if len(others) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes did not exit", len(others))
		}
		// From PID 1, -1 means every process of the namespace but itself.
		if err := unix.Kill(-1, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
		time.Sleep(delay)
	}
}

// otherPids lists the processes of the namespace other than PID 1,
// zombies included (they are gone once the reaper collects them).
func otherPids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && pid != 1 {
			out = append(out, pid)
		}
	}
	return out, nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// leftovers names session state that survives killing every process and
// that the agent cannot remove, or "" if there is none. devices are the
// device nodes init put in /dev beside its own.
func leftovers(devices map[string]bool) string {
	for _, f := range []string{"shm", "sem", "msg"} {
		b, err := os.ReadFile("/proc/sysvipc/" + f)
		if err == nil && strings.Count(strings.TrimSpace(string(b)), "\n") > 0 {
			return "System V IPC objects (" + f + ")"
		}
	}
	ents, err := os.ReadDir("/dev")
	if err != nil {
		return "cannot read /dev: " + err.Error()
	}
	if len(ents) != len(devEntries)+len(devices) {
		return "/dev lost or gained entries"
	}
	// Sandbox root owns these directories and could change them.
	for _, d := range []struct {
		path  string
		mode  uint32
		owned bool // by the sandbox's root (mqueue's root shows as nobody)
	}{{"/dev", 0o755, true}, {"/dev/shm", 0o1777, true}, {"/dev/mqueue", 0o1777, false}} {
		var st syscall.Stat_t
		if err := syscall.Stat(d.path, &st); err != nil || st.Mode&0o7777 != d.mode ||
			(d.owned && (st.Uid != 0 || st.Gid != 0)) {
			return d.path + " was changed"
		}
	}
	for _, e := range ents {
		if devices[e.Name()] {
			var st syscall.Stat_t
			if err := syscall.Lstat("/dev/"+e.Name(), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
				return "/dev/" + e.Name() + " was changed"
			}
			continue
		}
		want, known := devEntries[e.Name()]
		if !known {
			return "/dev/" + e.Name() + " was added"
		}
		if want != "" {
			if got, err := os.Readlink("/dev/" + e.Name()); err != nil || got != want {
				return "/dev/" + e.Name() + " was changed"
			}
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/null", &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		return "/dev/null was changed"
	}
	return ""
}
