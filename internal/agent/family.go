package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Every process an exec starts begins as the leader of a session of its
// own (and so of a process group). What it starts stays in that session
// and group unless it leaves them, and stays its descendant unless its
// parent dies; killFamily follows all three, so a timeout or a caller
// gone ends what the exec put in the background too. Only a process that
// both leaves the session and loses its parent (setsid, then a double
// fork) escapes; killing every process (killOthers) still ends it.

// procStat is what /proc/<pid>/stat says of a process's family.
type procStat struct {
	pid, ppid, pgrp, sid int
	zombie               bool
}

// readProcs reads the family fields of every process in the namespace.
func readProcs() ([]procStat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp session ...": comm may hold spaces
		// and parentheses, so read after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 4 {
			continue
		}
		st := procStat{pid: pid, zombie: len(f[0]) == 1 && f[0][0] == 'Z'}
		st.ppid, _ = strconv.Atoi(string(f[1]))
		st.pgrp, _ = strconv.Atoi(string(f[2]))
		st.sid, _ = strconv.Atoi(string(f[3]))
		out = append(out, st)
	}
	return out, nil
}

// family returns the living processes of leader's family: its session,
// its process group, and every descendant of any of them.
func family(procs []procStat, leader int) []int {
	in := map[int]bool{}
	for _, p := range procs {
		if p.pid == leader || p.sid == leader || p.pgrp == leader {
			in[p.pid] = true
		}
	}
	for grew := true; grew; {
		grew = false
		for _, p := range procs {
			if !in[p.pid] && in[p.ppid] {
				in[p.pid], grew = true, true
			}
		}
	}
	var out []int
	for _, p := range procs {
		if in[p.pid] && !p.zombie {
			out = append(out, p.pid)
		}
	}
	return out
}

// killFamily SIGKILLs leader's family until none of it is left alive (it
// may fork while being killed), or timeout passes.
func killFamily(leader int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for delay := 100 * time.Microsecond; ; delay = min(delay*2, 10*time.Millisecond) {
		procs, err := readProcs()
		if err != nil {
			return err
		}
		alive := family(procs, leader)
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of the family of %d did not die", len(alive), leader)
		}
		for _, pid := range alive {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
		time.Sleep(delay)
	}
}
