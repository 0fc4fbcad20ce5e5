package linux_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// TestNoLeaks creates and destroys a few hundred sandboxes, some destroyed
// while being created (by a concurrent Destroy or a cancelled context), some
// with processes still running, and then looks for anything left behind.
func TestNoLeaks(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 60
	}
	dir := t.TempDir()
	r := openRuntimeAt(t, dir)
	var (
		mu          sync.Mutex
		ids         []string
		interrupted atomic.Int64
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id := "leak-" + string(rune('a'+i%26)) + "-" + itoa(i)
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
	t.Logf("%d of %d creates were interrupted by a destroy or a cancelled context", interrupted.Load(), n/2)
	if interrupted.Load() == 0 {
		t.Fatal("no create was interrupted: the test did not exercise partial creates")
	}
	list, _ := r.List(context.Background())
	if len(list) != 0 {
		t.Fatalf("%d sandboxes still listed", len(list))
	}
	assertNoLeaks(t, dir, ids)
	// Closing the runtime ends its spare PID 1s.
	r.Close()
	for _, l := range linuxtest.Spares(dir) {
		t.Errorf("left: %s", l)
	}
}

func itoa(i int) string {
	return strings.TrimLeft(strings.Replace(time.Duration(i).String(), "ns", "", 1), "0")
}

// leakRound puts one sandbox through one of four fates; it reports whether
// its Create completed.
func leakRound(t *testing.T, r runtime.Runtime, id string, i int) (created bool) {
	ctx := context.Background()
	spec := runtime.Spec{ID: id, Template: "base"}
	switch i % 4 {
	case 0: // destroyed by a concurrent Destroy at a random moment of Create
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
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
	case 2: // destroyed with processes running, some of them forking
		if _, err := r.Create(ctx, spec); err != nil {
			t.Errorf("create %s: %v", id, err)
			return true
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
