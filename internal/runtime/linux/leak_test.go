package linux_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// TestNoLeaks creates and destroys a few hundred sandboxes, all with a
// network path out, some destroyed while being created (by a concurrent
// Destroy or a cancelled context), some with processes still running and
// connections open, and then looks for anything left behind: processes,
// cgroups, directories, mounts, and of their networks interfaces,
// routes, rules, descriptors and sockets.
func TestNoLeaks(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 60
	}
	dir := t.TempDir()
	eng, reg := newEngine(t)
	r := openNetRuntime(t, eng, dir)
	hostNet := hostNetwork(t)
	fds := openFDs(t)
	var (
		mu          sync.Mutex
		ids         []string
		interrupted atomic.Int64
	)
	work := make(chan int)
	began := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				// The process id in the name: the cgroups of sandboxes
				// of another run of this test on the machine are not ours.
				id := fmt.Sprintf("leak%x-%c-%s", os.Getpid(), 'a'+i%26, itoa(i))
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
				if !leakRound(t, r, id, i) {
					interrupted.Add(1)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d of %d creates were interrupted by a destroy or a cancelled context (%d rounds in %v)",
		interrupted.Load(), n/2, n, time.Since(began).Round(time.Millisecond))
	if interrupted.Load() == 0 {
		t.Fatal("no create was interrupted: the test did not exercise partial creates")
	}
	list, _ := r.List(context.Background())
	if len(list) != 0 {
		t.Fatalf("%d sandboxes still listed", len(list))
	}
	assertNoLeaks(t, dir, ids)
	// Links close in the background; once closed, nothing of them is left.
	// (Generous under a loaded machine; on failure the goroutines of the
	// egress package say where a link's close is stuck.)
	for deadline := time.Now().Add(30 * time.Second); gauge(t, reg, "sandpool_egress_links") != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v egress links still open 30s after the last destroy; egress goroutines:\n%s",
				gauge(t, reg, "sandpool_egress_links"), goroutinesOf("internal/egress"))
		}
	}
	waitUntil(t, "the descriptors of the links and their connections closed", func() bool {
		now := openFDs(t)
		return now["tun"] == 0 && now["socket"] <= fds["socket"]
	})
	if got := hostNetwork(t); got != hostNet {
		t.Errorf("the host's network changed:\n%s\nwas\n%s", got, hostNet)
	}
	// Closing the runtime ends its spare PID 1s.
	r.Close()
	for _, l := range linuxtest.Spares(dir) {
		t.Errorf("left: %s", l)
	}
}

// goroutinesOf returns the stacks of this process's goroutines that
// mention pkg.
func goroutinesOf(pkg string) string {
	var b strings.Builder
	var all bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&all, 2)
	for _, g := range strings.Split(all.String(), "\n\n") {
		if strings.Contains(g, pkg) {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

// hostNetwork describes the host's interfaces, addresses, routes, rules
// and firewall (in this test's namespace, which plays the host).
func hostNetwork(tb testing.TB) string {
	tb.Helper()
	var b strings.Builder
	for _, c := range [][]string{{"ip", "-o", "link"}, {"ip", "-o", "-4", "addr"}, {"ip", "route"}, {"ip", "rule"}, {"nft", "list", "ruleset"}} {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil && c[0] != "nft" { // nft may not be installed
			tb.Fatalf("%v: %v %s", c, err, out)
		}
		fmt.Fprintf(&b, "%v:\n%s", c, out)
	}
	return b.String()
}

// openFDs counts this process's descriptors by kind: "tun" (egress
// links), "socket", "other".
func openFDs(tb testing.TB) map[string]int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case l == "/dev/net/tun":
			out["tun"]++
		case strings.HasPrefix(l, "socket:"):
			out["socket"]++
		default:
			out["other"]++
		}
	}
	return out
}

// gauge reads a gauge (without labels) from reg.
func gauge(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("no gauge %s", name)
	return 0
}

func itoa(i int) string {
	return strings.TrimLeft(strings.Replace(time.Duration(i).String(), "ns", "", 1), "0")
}

// leakRound puts one sandbox through one of four fates; it reports whether
// its Create completed.
func leakRound(t *testing.T, r runtime.Runtime, id string, i int) (created bool) {
	ctx := context.Background()
	spec := runtime.Spec{ID: id, Template: "base", Network: openNet}
	switch i % 4 {
	case 0: // destroyed by a concurrent Destroy at a random moment of Create
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(time.Duration(rand.IntN(50000)) * time.Microsecond)
			if err := r.Destroy(ctx, id); err != nil {
				t.Errorf("destroy mid-create %s: %v", id, err)
			}
		}()
		_, err := r.Create(ctx, spec) // may or may not finish first
		<-done
		if err == nil {
			// The Destroy came before the Create had begun (it destroys
			// what exists, not what is made later): destroy it now.
			if derr := r.Destroy(ctx, id); derr != nil {
				t.Errorf("destroy %s: %v", id, derr)
			}
		}
		return err == nil
	case 1: // context cancelled at a random moment of Create
		cctx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(20000))*time.Microsecond)
		_, err := r.Create(cctx, spec)
		cancel()
		if err := r.Destroy(ctx, id); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
		return err == nil
	case 2: // destroyed with processes running, some of them forking, one holding a connection open
		if _, err := r.Create(ctx, spec); err != nil {
			t.Errorf("create %s: %v", id, err)
			return true
		}
		hold := `python3 -c 'import socket,time; s=socket.create_connection(("203.0.113.20",7000)); s.sendall(b"x"); s.recv(1); print("open", flush=True); time.sleep(300)'`
		p, err := r.Exec(ctx, id, proc.Spec{Shell: hold, Background: true}, proc.Stdio{})
		if err != nil {
			t.Errorf("exec in %s: %v", id, err)
		} else {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				st, _ := r.NetworkStats(ctx, id)
				if st.Active == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s: no connection open (%+v)", id, st)
					break
				}
			}
			p.Close()
		}
		for _, cmd := range []string{"sleep 300 & sleep 300 & echo", "while true; do sleep 0.01; done"} {
			p, err := r.Exec(ctx, id, proc.Spec{Shell: cmd, Background: true}, proc.Stdio{})
			if err != nil {
				t.Errorf("exec in %s: %v", id, err)
				continue
			}
			p.Close()
		}
	default: // frozen
		if _, err := r.Create(ctx, spec); err != nil {
			t.Errorf("create %s: %v", id, err)
			return true
		}
		if err := r.Freeze(ctx, id); err != nil {
			t.Errorf("freeze %s: %v", id, err)
		}
	}
	if err := r.Destroy(ctx, id); err != nil {
		t.Errorf("destroy %s: %v", id, err)
	}
	return true
}

// assertNoLeaks checks that nothing of the given sandboxes is left: no
// directory, no cgroup, no process, no mount.
func assertNoLeaks(t *testing.T, dataDir string, ids []string) {
	t.Helper()
	for _, l := range linuxtest.Leftovers(dataDir, ids) {
		t.Errorf("left: %s", l)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dataDir) {
		t.Errorf("mount left under %s", dataDir)
	}
}
