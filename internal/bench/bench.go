// Package bench measures what users feel of a running sandpool server,
// through the Go client: cold start, pool acquire, exec, pause and resume,
// and how many idle sandboxes fit. `sandpool bench` and the e2e Go
// benchmarks run it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/latency"
)

// Scenarios, in the order they run.
var Scenarios = []string{"cold", "acquire", "exec", "pause", "density"}

// Config is one run.
type Config struct {
	Client    *client.Client
	Scenarios []string
	// Duration of each timed scenario (default 10s).
	Duration time.Duration
	// Concurrency is how many callers run at once (default 4).
	Concurrency int
	// DensityMax caps the density scenario (default 200 sandboxes);
	// DensityMargin is the host memory it leaves free (default 1 GiB).
	DensityMax    int
	DensityMargin int64
	// Progress, if set, is written a line (ending in \r) now and then.
	Progress io.Writer
	// Template the sandboxes are made of (default "base"): an image
	// template's figures beside base's.
	Template string
}

func (c *Config) defaults() error {
	if c.Client == nil {
		return errors.New("bench: no client")
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (have %v)", s, Scenarios)
		}
	}
	if c.Template == "" {
		c.Template = "base"
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Duration < 0 {
		return fmt.Errorf("bench: duration %s must be positive", c.Duration)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.Concurrency < 0 || c.Concurrency > 1000 {
		return fmt.Errorf("bench: concurrency %d out of range 1-1000", c.Concurrency)
	}
	if c.DensityMax == 0 {
		c.DensityMax = 200
	}
	if c.DensityMargin == 0 {
		c.DensityMargin = 1 << 30
	}
	return nil
}

// Result holds each figure by its JSON name.
type Result map[string]float64

// Run runs the scenarios in order and returns their figures. Everything it
// makes is removed before it returns, even when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, res: Result{}}
	defer r.cleanup()
	for _, name := range Scenarios {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		var err error
		switch name {
		case "cold":
			err = r.cold(ctx)
		case "acquire":
			err = r.acquire(ctx)
		case "exec":
			err = r.exec(ctx)
		case "pause":
			err = r.pause(ctx)
		case "density":
			err = r.density(ctx)
		}
		r.progressDone()
		if err != nil {
			return r.res, fmt.Errorf("bench %s: %w", name, err)
		}
	}
	return r.res, nil
}

type run struct {
	cfg Config
	res Result

	mu        sync.Mutex
	sandboxes map[string]bool
	pools     []string
}

func (r *run) track(id string) {
	r.mu.Lock()
	if r.sandboxes == nil {
		r.sandboxes = map[string]bool{}
	}
	r.sandboxes[id] = true
	r.mu.Unlock()
}

// remove deletes a sandbox the run made.
func (r *run) remove(ctx context.Context, id string) error {
	err := r.cfg.Client.DeleteSandbox(context.WithoutCancel(ctx), id)
	if err == nil || client.IsNotFound(err) {
		r.mu.Lock()
		delete(r.sandboxes, id)
		r.mu.Unlock()
		return nil
	}
	return err
}

// cleanup removes whatever the run made, on a context of its own.
func (r *run) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.mu.Lock()
	ids := make([]string, 0, len(r.sandboxes))
	for id := range r.sandboxes {
		ids = append(ids, id)
	}
	pools := r.pools
	r.pools = nil
	r.mu.Unlock()
	for _, p := range pools {
		_ = r.cfg.Client.DeletePool(ctx, p) // best effort: gone already is fine
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_ = r.remove(ctx, id) // best effort; what is left is reported by the server's list
		})
	}
	wg.Wait()
}

func (r *run) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "\r\033[K"+format, args...)
	}
}

func (r *run) progressDone() {
	if r.cfg.Progress != nil {
		fmt.Fprint(r.cfg.Progress, "\r\033[K")
	}
}

// opTimeout bounds one operation of a timed scenario.
const opTimeout = 2 * time.Minute

// timed runs op on Concurrency workers for Duration, reporting progress;
// op records its own latencies. Ops get ctx itself (cancelled only by the
// caller): the time limit stops the loop between ops, not an op midway.
func (r *run) timed(ctx context.Context, name string, rec *latency.Recorder, op func(ctx context.Context) error) (int, time.Duration, error) {
	loop, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.progress("%s: %d ops, p50 %.2f ms, p99 %.2f ms, %s left", name, rec.Count(), rec.Ms(50), rec.Ms(99),
					(r.cfg.Duration - time.Since(start)).Round(time.Second))
			}
		}
	}()
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for loop.Err() == nil {
				// No call may hang the run: each op has a generous bound.
				octx, ocancel := context.WithTimeout(ctx, opTimeout)
				err := op(octx)
				ocancel()
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted
					}
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	return rec.Count(), time.Since(start), firstErr
}
