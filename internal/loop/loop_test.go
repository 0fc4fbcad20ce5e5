package loop

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRunRounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var rounds []time.Duration
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, Options{Name: "t", Every: time.Second, Now: true}, func(context.Context) error {
				rounds = append(rounds, time.Since(start))
				return nil
			})
		}()
		time.Sleep(3500 * time.Millisecond)
		cancel()
		<-done
		want := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second}
		if len(rounds) != len(want) {
			t.Fatalf("rounds at %v, want %v", rounds, want)
		}
		for i := range want {
			if rounds[i] != want[i] {
				t.Fatalf("rounds at %v, want %v", rounds, want)
			}
		}
	})
}

// A wake starts a round at once; a failing or panicking round is logged
// and the loop goes on.
func TestRunWakeFailPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log bytes.Buffer
		var mu sync.Mutex
		ctx, cancel := context.WithCancel(t.Context())
		wake := make(chan struct{}, 1)
		n := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, Options{Name: "flaky", Every: time.Hour, Wake: wake, Log: slog.New(slog.NewTextHandler(&log, nil))},
				func(context.Context) error {
					mu.Lock()
					defer mu.Unlock()
					n++
					switch n {
					case 1:
						return errors.New("store down")
					case 2:
						panic("bug")
					}
					return nil
				})
		}()
		for range 3 {
			wake <- struct{}{}
			synctest.Wait()
		}
		cancel()
		<-done
		if n != 3 {
			t.Fatalf("%d rounds after three wakes (within the hour), want 3", n)
		}
		if !strings.Contains(log.String(), "store down") || !strings.Contains(log.String(), "panicked") {
			t.Fatalf("log:\n%s", log.String())
		}
	})
}

// A round's deadline is its own, and a detached round is not cut short
// when the loop's context ends.
func TestRunTimeoutAndDetached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var deadline time.Time
		var finished bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, Options{Every: time.Second, Timeout: 5 * time.Second, Now: true, Detached: true}, func(rctx context.Context) error {
				deadline, _ = rctx.Deadline()
				cancel() // shutdown begins mid-round
				select {
				case <-rctx.Done():
				case <-time.After(2 * time.Second):
					finished = true
				}
				return nil
			})
		}()
		<-done
		if want := time.Now().Add(-2 * time.Second).Add(5 * time.Second); !deadline.Equal(want) {
			t.Fatalf("round deadline %v, want %v", deadline, want)
		}
		if !finished {
			t.Fatal("a detached round was cancelled by the loop's end")
		}
	})
}
