package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// ledger is what the API confirmed, per sandbox.
type ledger struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	busy      bool   // a worker is calling on it (one at a time, so outcomes are ordered)
	deleted   bool   // a delete was confirmed
	uncertain bool   // an operation on it was cut off by the crash
	file      string // confirmed content of /home/user/f
}

func (l *ledger) ids(pick func(*entry) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, e := range l.m {
		if pick(e) {
			out = append(out, id)
		}
	}
	return out
}

func (l *ledger) update(id string, f func(*entry)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[id]
	if e == nil {
		e = &entry{}
		l.m[id] = e
	}
	f(e)
}

// TestCrashRecovery kills `sandpool serve` with SIGKILL at random moments
// of a loop of creates, execs, pauses and deletes, restarts it, and checks
// after its first reconciler pass that nothing the API confirmed was lost,
// every sandbox the store calls running answers, and nothing runs or
// exists on the host that the store does not know.
func TestCrashRecovery(t *testing.T) {
	data := t.TempDir()
	cgroup := fmt.Sprintf("sandpool-crash-%d", os.Getpid())
	flags := []string{"--cgroup-parent", cgroup}
	t.Cleanup(func() {
		for _, c := range []string{"cpu", "memory", "pids", "freezer"} {
			os.Remove(filepath.Join("/sys/fs/cgroup", c, cgroup)) // empty once the sandboxes are gone
		}
	})
	// Replay a failure with SANDPOOL_CRASH_SEED=<the seed it logged>: the
	// kill times and every worker's choice of operations come from it.
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SANDPOOL_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SANDPOOL_CRASH_SEED=%q: want a number", v)
		}
		seed = n
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("seed %d (replay with SANDPOOL_CRASH_SEED=%d)", seed, seed)
	l := &ledger{m: map[string]*entry{}}
	const cycles = 5
	var killed map[string]bool
	for cycle := range cycles {
		s := startServer(t, data, flags...)
		verify(t, s, l, cgroup, killed)
		c := s.client("", client.WithRetryBudget(0))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wr := rand.New(rand.NewPCG(rng.Uint64(), uint64(w)))
			wg.Go(func() { work(c, l, wr, stop) })
		}
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		s.cmd.Process.Kill() // SIGKILL: no shutdown of any kind
		<-s.exited
		killed = spareGroups(data, cgroup)
		close(stop)
		wg.Wait()
		t.Logf("cycle %d: %d sandboxes in the ledger", cycle, len(l.m))
	}
	s := startServer(t, data, flags...)
	verify(t, s, l, cgroup, killed)
	// Clean up through the API.
	c := s.client("")
	list, _ := c.ListSandboxes(context.Background(), client.ListOptions{})
	for _, sb := range list {
		if err := c.DeleteSandbox(context.Background(), sb.ID); err != nil {
			t.Errorf("delete %s: %v", sb.ID, err)
		}
	}
	// The spare PID 1s of every killed server ended with it (their
	// control sockets closed), and the last server's end with its stop.
	s.stop()
	deadline := time.Now().Add(30 * time.Second)
	for left := linuxtest.Spares(data); len(left) > 0; left = linuxtest.Spares(data) {
		if time.Now().After(deadline) {
			t.Fatalf("spare PID 1s left: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// work runs random operations until stop, recording what was confirmed.
func work(c *client.Client, l *ledger, rng *rand.Rand, stop chan struct{}) {
	ctx := context.Background()
	for {
		select {
		case <-stop:
			return
		default:
		}
		alive := l.ids(func(e *entry) bool { return !e.deleted && !e.busy })
		op := rng.IntN(100)
		if len(alive) == 0 || op < 25 {
			sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
			if err == nil {
				l.update(sb.ID, func(*entry) {})
			}
			continue
		}
		id := alive[rng.IntN(len(alive))]
		claimed := false
		l.update(id, func(e *entry) {
			if !e.busy {
				e.busy, claimed = true, true
			}
		})
		if !claimed {
			continue
		}
		var err error
		var token string
		switch {
		case op < 55:
			token = fmt.Sprintf("t%d", rng.Uint64())
			_, err = c.Exec(ctx, id, client.ExecRequest{Shell: "echo " + token + " > /home/user/f.new && mv /home/user/f.new /home/user/f"})
		case op < 70:
			_, err = c.Pause(ctx, id, rng.IntN(2) == 0)
		case op < 80:
			_, err = c.Resume(ctx, id)
		case op < 95:
			err = c.DeleteSandbox(ctx, id)
		default:
			_, err = c.Ping(ctx, id)
		}
		switch {
		case err == nil && op < 55:
			l.update(id, func(e *entry) { e.file = token })
		case err == nil && op >= 80 && op < 95:
			l.update(id, func(e *entry) { e.deleted = true })
		case err != nil && apiErr(err) == nil:
			// Cut off by the crash: its outcome is unknown.
			l.update(id, func(e *entry) { e.uncertain = true })
		}
		l.update(id, func(e *entry) { e.busy = false })
	}
}

// verify checks the server's books against the ledger and the host.
// spareGroups are the cgroups of spare PID 1s of the server on data dir.
func spareGroups(data, cgroup string) map[string]bool {
	prefix := linux.SpareTag(data) + "-"
	out := map[string]bool{}
	for _, ctl := range []string{"memory", "pids", "freezer", "cpu"} {
		cgs, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", ctl, cgroup))
		for _, e := range cgs {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
				out[e.Name()] = true
			}
		}
	}
	return out
}

// verify checks the restarted server s against the ledger; killed are the
// spare cgroups the server killed before it had.
func verify(t *testing.T, s *server, l *ledger, cgroup string, killed map[string]bool) {
	t.Helper()
	ctx := context.Background()
	c := s.client("")
	all, err := c.ListSandboxes(ctx, client.ListOptions{Statuses: []string{"all"}})
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, sb := range all {
		status[sb.ID] = sb.Status
	}
	// Every sandbox the store calls running answers, without a resume.
	noResume := s.client("", client.WithoutAutoResume())
	for _, sb := range all {
		if sb.Status != "running" {
			continue
		}
		if _, err := noResume.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			t.Errorf("running sandbox %s does not answer: %v", sb.ID, err)
		}
	}
	// Nothing confirmed was lost.
	l.mu.Lock()
	entries := map[string]entry{}
	for id, e := range l.m {
		entries[id] = *e
	}
	l.mu.Unlock()
	for id, e := range entries {
		st := status[id]
		switch {
		case e.uncertain:
		case e.deleted:
			if st != "stopped" {
				t.Errorf("%s was deleted, yet is %q", id, st)
			}
		default:
			if st != "running" && st != "paused" {
				t.Errorf("%s was confirmed and never deleted, yet is %q", id, st)
				continue
			}
			if e.file != "" {
				res, err := c.Exec(ctx, id, client.ExecRequest{Cmd: []string{"cat", "/home/user/f"}})
				if err != nil || strings.TrimSpace(string(res.Stdout)) != e.file {
					t.Errorf("%s: confirmed file %q, found %q (%v)", id, e.file, res.Stdout, err)
				}
			}
		}
	}
	// Nothing on the host that the store does not know as active.
	active := func(id string) bool {
		st := status[id]
		return st != "" && st != "stopped" && st != "failed"
	}
	ents, _ := os.ReadDir(filepath.Join(s.data, "sandboxes"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && !active(e.Name()) {
			t.Errorf("directory of %s (%q) left on the host", e.Name(), status[e.Name()])
		}
	}
	// The running server's spare PID 1s (see internal/runtime/linux/
	// spare.go) have cgroups of their own, named with its data directory's
	// tag and a random suffix; none of the killed servers' may be left
	// (the new server sweeps them at start).
	spare := linux.SpareTag(s.data) + "-"
	spares := spareGroups(s.data, cgroup)
	for name := range killed {
		if spares[name] {
			t.Errorf("spare cgroup %s of a killed server left on the host", name)
		}
	}
	for _, ctl := range []string{"memory", "pids", "freezer", "cpu"} {
		cgs, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", ctl, cgroup))
		for _, e := range cgs {
			if e.IsDir() && !strings.HasPrefix(e.Name(), spare) && !active(e.Name()) {
				t.Errorf("cgroup %s/%s (%q) left on the host", ctl, e.Name(), status[e.Name()])
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			_, rest, ok := strings.Cut(line, "/"+cgroup+"/")
			if !ok {
				continue
			}
			id, _, _ := strings.Cut(rest, "/")
			// The running server's spares (made since the list above
			// too): any group of its tag but the killed servers'.
			running := strings.HasPrefix(id, spare) && !killed[id]
			if !active(id) && !running {
				t.Errorf("process %s in the cgroup of %s (%q)", filepath.Dir(p), id, status[id])
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.Contains(sc.Text(), s.data) {
				t.Errorf("host mount of the data directory: %s", sc.Text())
			}
		}
		f.Close()
	}
}
