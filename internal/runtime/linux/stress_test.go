package linux_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
)

// Many short processes at once in one sandbox: every one is reaped and
// every exec returns.
func TestConcurrentShortExecs(t *testing.T) {
	r := openRuntime(t)
	id := createSandbox(t, r, runtime.Spec{Template: "base"})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 150 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"true"}}, proc.Stdio{})
				if err != nil {
					cancel()
					t.Errorf("exec: %v", err)
					return
				}
				done := make(chan error, 1)
				go func() { _, err := p.Wait(); done <- err }()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("wait: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("exec of true did not end in 10 s (pid %d)", p.Pid())
					cancel()
					return
				}
				cancel()
			}
		})
	}
	wg.Wait()
}
