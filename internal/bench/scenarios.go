package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/latency"
)

func suffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b[:])
}

// create makes a sandbox (of the run's template) the run tracks. If the call fails midway
// (interrupted), the sandbox the server may have made is found again by
// its idempotency key and removed.
func (r *run) create(ctx context.Context, req client.CreateSandboxRequest) (*client.Sandbox, error) {
	return r.createWith(ctx, r.cfg.Client, req)
}

func (r *run) createWith(ctx context.Context, c *client.Client, req client.CreateSandboxRequest) (*client.Sandbox, error) {
	req.IdempotencyKey = "bench-" + suffix() + suffix()
	if req.Template == "" {
		req.Template = r.cfg.Template
	}
	sb, err := c.CreateSandbox(ctx, req)
	if err == nil {
		r.track(sb.ID)
		return sb, nil
	}
	if ctx.Err() != nil {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if again, err := r.cfg.Client.CreateSandbox(bg, req); err == nil {
			r.track(again.ID)
		}
	}
	return nil, err
}

// cold: create-to-first-exec of a base sandbox.
func (r *run) cold(ctx context.Context) error {
	var rec latency.Recorder
	_, _, err := r.timed(ctx, "cold", &rec, func(ctx context.Context) error {
		start := time.Now()
		sb, err := r.create(ctx, client.CreateSandboxRequest{})
		if err != nil {
			return err
		}
		if _, err := r.cfg.Client.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			return err
		}
		rec.Since(start)
		return r.remove(ctx, sb.ID)
	})
	r.res["cold_create_p50_ms"], r.res["cold_create_p99_ms"] = rec.Ms(50), rec.Ms(99)
	return err
}

// acquire: acquire+release from a warm pool of base sandboxes.
func (r *run) acquire(ctx context.Context) error {
	c := r.cfg.Client
	name := "bench-" + suffix()
	idle := max(2*r.cfg.Concurrency, 8)
	r.mu.Lock()
	r.pools = append(r.pools, name)
	r.mu.Unlock()
	if _, err := c.CreatePool(ctx, client.PoolConfig{Name: name, Template: r.cfg.Template, MinIdle: idle, MaxIdle: 2 * idle,
		AcquirePolicy: "wait"}); err != nil {
		return err
	}
	for {
		p, err := c.GetPool(ctx, name)
		if err != nil {
			return err
		}
		r.progress("acquire: filling the pool, %d of %d ready", p.Idle, idle)
		if p.Idle >= idle {
			break
		}
		if p.Status == "degraded" {
			return fmt.Errorf("pool %s degraded: %s", name, p.LastError)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	var acq latency.Recorder
	n, took, err := r.timed(ctx, "acquire", &acq, func(ctx context.Context) error {
		start := time.Now()
		sb, err := c.Acquire(ctx, name, 0)
		if err != nil {
			return err
		}
		acq.Since(start)
		_, err = c.Release(ctx, sb.ID, false)
		return err
	})
	r.res["acquire_p50_ms"], r.res["acquire_p99_ms"] = acq.Ms(50), acq.Ms(99)
	r.res["acquire_release_per_sec"] = float64(n) / took.Seconds()
	if err != nil {
		return err
	}
	return c.DeletePool(context.WithoutCancel(ctx), name)
}

// exec: `true` in a running sandbox.
func (r *run) exec(ctx context.Context) error {
	sb, err := r.create(ctx, client.CreateSandboxRequest{})
	if err != nil {
		return err
	}
	var rec latency.Recorder
	_, _, err = r.timed(ctx, "exec", &rec, func(ctx context.Context) error {
		start := time.Now()
		if _, err := r.cfg.Client.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			return err
		}
		rec.Since(start)
		return nil
	})
	r.res["exec_p50_ms"], r.res["exec_p99_ms"] = rec.Ms(50), rec.Ms(99)
	if err != nil {
		return err
	}
	return r.remove(ctx, sb.ID)
}

// pause: pause+resume, frozen and archived, of a sandbox running a process.
func (r *run) pause(ctx context.Context) error {
	c := r.cfg.Client
	var frozen, archived latency.Recorder
	for _, archive := range []bool{false, true} {
		rec := &frozen
		name := "pause (frozen)"
		if archive {
			rec, name = &archived, "pause (archive)"
		}
		_, _, err := r.timed(ctx, name, rec, func(ctx context.Context) error {
			// One sandbox per worker and round: pausing is per sandbox.
			sb, err := r.create(ctx, client.CreateSandboxRequest{})
			if err != nil {
				return err
			}
			defer r.remove(ctx, sb.ID)
			if _, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Cmd: []string{"sleep", "3600"}}); err != nil {
				return err
			}
			for range 5 {
				start := time.Now()
				if _, err := c.Pause(ctx, sb.ID, archive); err != nil {
					return err
				}
				if _, err := c.Resume(ctx, sb.ID); err != nil {
					return err
				}
				rec.Since(start)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	r.res["pause_resume_p50_ms"], r.res["archive_resume_p50_ms"] = frozen.Ms(50), archived.Ms(50)
	return nil
}

// density: idle base sandboxes until DensityMax, until the host's
// available memory would drop below DensityMargin, or until the node's
// own limit (--max-sandboxes) says no more: that is a result, not an
// error. Reports the count, why it stopped, and the host memory each costs
// beyond what its own processes use.
func (r *run) density(ctx context.Context) error {
	c := r.cfg.Client
	if _, err := c.Node(ctx); err != nil {
		return fmt.Errorf("node info (needs an admin key): %w", err)
	}
	// The host frees a destroyed sandbox's kernel memory (its network
	// namespace above all) a while after: after the other scenarios, wait
	// until the host's available memory holds still.
	before, err := r.settled(ctx)
	if err != nil {
		return err
	}
	var ids []string
	perSandbox := int64(0)
	// A full node answers 429 at_capacity, which the client would retry
	// for its whole budget: ask once.
	once := c.With(client.WithRetryBudget(0))
	stopped := "density_max"
	defer func() { r.progress("density: stopped by %s with %d sandboxes", stopped, len(ids)) }()
	for len(ids) < r.cfg.DensityMax && stopped == "density_max" {
		now, err := c.Node(ctx)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			perSandbox = (before.MemAvailableBytes - now.MemAvailableBytes) / int64(len(ids))
		}
		if now.MemAvailableBytes-2*max(perSandbox, 1<<20)*int64(r.cfg.Concurrency) < r.cfg.DensityMargin {
			stopped = "memory"
			break
		}
		r.progress("density: %d sandboxes, %d MiB available", len(ids), now.MemAvailableBytes>>20)
		batch := min(r.cfg.Concurrency, r.cfg.DensityMax-len(ids))
		made := make([]string, batch)
		errs := make([]error, batch)
		var wg sync.WaitGroup
		for i := range batch {
			wg.Go(func() {
				sb, err := r.createWith(ctx, once, client.CreateSandboxRequest{})
				if err == nil {
					made[i] = sb.ID
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, id := range made {
			switch {
			case id != "":
				ids = append(ids, id)
			case client.IsAtCapacity(errs[i]):
				stopped = "node_limit"
			case errs[i] != nil:
				return errs[i]
			}
		}
	}
	after, err := r.settled(ctx)
	if err != nil {
		return err
	}
	r.res["density_sandboxes"] = float64(len(ids))
	if stopped == "node_limit" {
		r.res["density_stopped_at_node_limit"] = 1
	}
	if len(ids) > 0 {
		used := before.MemAvailableBytes - after.MemAvailableBytes
		own := after.SandboxMemoryBytes - before.SandboxMemoryBytes
		r.res["host_overhead_per_sandbox_kib"] = float64(used-own) / float64(len(ids)) / 1024
	}
	for _, id := range ids {
		if err := r.remove(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// settled samples the node until the host's available memory moves less
// than 1 MiB in a second (at most 15 s), and returns the last sample.
func (r *run) settled(ctx context.Context) (*client.NodeInfo, error) {
	var window []*client.NodeInfo
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := r.cfg.Client.Node(ctx)
		if err != nil {
			return nil, err
		}
		window = append(window, n)
		if len(window) > 5 {
			window = window[1:]
		}
		if len(window) == 5 || time.Now().After(deadline) {
			lo, hi := window[0].MemAvailableBytes, window[0].MemAvailableBytes
			for _, w := range window {
				lo, hi = min(lo, w.MemAvailableBytes), max(hi, w.MemAvailableBytes)
			}
			if hi-lo < 1<<20 || time.Now().After(deadline) {
				return n, nil
			}
		}
		r.progress("density: waiting for the host's memory to settle (%d MiB available)", n.MemAvailableBytes>>20)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
