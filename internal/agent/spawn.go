package agent

import (
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spawner starts processes from one dedicated OS thread. Capabilities, the
// no_new_privs bit and seccomp filters are per thread in Linux and children
// inherit them from the thread that forks, so hardening that thread alone
// confines every sandboxed process without constraining the agent itself.
//
// The spawner also reaps: as PID 1 the agent inherits every orphan, so one
// goroutine waits for any child and hands the status to the process that
// owns the pid. Forking and reaping share a mutex, so a pid can never be
// reaped (and reused) between fork and registration.
type spawner struct {
	reqs chan spawnReq

	mu      sync.Mutex
	waiters map[int]func(syscall.WaitStatus)
}

type spawnReq struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	// onExit is registered for the new pid before the reaper can see it.
	onExit func(syscall.WaitStatus)
	resp   chan spawnResp
}

type spawnResp struct {
	pid int
	err error
}

// startSpawner starts the spawner thread, runs setup on it (hardening),
// and starts the reaper. It returns setup's error.
func startSpawner(setup func() error) (*spawner, error) {
	s := &spawner{
		reqs:    make(chan spawnReq),
		waiters: make(map[int]func(syscall.WaitStatus)),
	}
	// Asked for before the first child can exist: a SIGCHLD that arrived
	// before would be lost.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is hardened for good and must not
		// run any other goroutine; it exits with this goroutine.
		runtime.LockOSThread()
		if setup != nil {
			if err := setup(); err != nil {
				ready <- err
				return
			}
		}
		ready <- nil
		for r := range s.reqs {
			s.mu.Lock()
			pid, err := syscall.ForkExec(r.argv0, r.argv, r.attr)
			if err == nil {
				s.waiters[pid] = r.onExit
			}
			s.mu.Unlock()
			r.resp <- spawnResp{pid, err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	go s.reap(sigs)
	return s, nil
}

func (s *spawner) spawn(argv0 string, argv []string, attr *syscall.ProcAttr, onExit func(syscall.WaitStatus)) (int, error) {
	resp := make(chan spawnResp, 1)
	s.reqs <- spawnReq{argv0, argv, attr, onExit, resp}
	r := <-resp
	return r.pid, r.err
}

// reap collects every exited child, ours or orphaned, for the life of the
// agent: at each SIGCHLD, and every second in case one was missed (a
// zombie left unreaped would hang whoever waits for its exit).
func (s *spawner) reap(sigs chan os.Signal) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-sigs:
		case <-t.C:
		}
		s.reapAll()
	}
}

func (s *spawner) reapAll() {
	for {
		var ws syscall.WaitStatus
		s.mu.Lock()
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		var fn func(syscall.WaitStatus)
		if pid > 0 {
			fn = s.waiters[pid]
			delete(s.waiters, pid)
		}
		s.mu.Unlock()
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if fn != nil {
			fn(ws)
		}
	}
}
