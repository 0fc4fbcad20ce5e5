package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/client"
	"github.com/sandpool/sandpool/internal/bench"
	"github.com/sandpool/sandpool/internal/latency"
)

// BenchmarkCreateExecDelete is a sandbox's whole life over HTTP against
// the real binary: create `base`, run `true`, delete.
func BenchmarkCreateExecDelete(b *testing.B) {
	s := startServer(b, "")
	c := s.client("")
	ctx := context.Background()
	var create, exec, del, total latency.Recorder
	for b.Loop() {
		t0 := time.Now()
		sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		create.Add(t1.Sub(t0))
		exec.Add(t2.Sub(t1))
		del.Add(t3.Sub(t2))
		total.Add(t3.Sub(t0))
	}
	total.Report(b, "total")
	create.Report(b, "create")
	exec.Report(b, "first_exec")
	del.Report(b, "delete")
}

// BenchmarkExecRoundTrip runs `true` in a running sandbox over HTTP
// against the real binary.
func BenchmarkExecRoundTrip(b *testing.B) {
	s := startServer(b, "")
	c := s.client("")
	ctx := context.Background()
	sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base"})
	if err != nil {
		b.Fatal(err)
	}
	var rtt latency.Recorder
	for b.Loop() {
		start := time.Now()
		if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Cmd: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		rtt.Since(start)
	}
	rtt.Report(b, "exec")
	if err := c.DeleteSandbox(ctx, sb.ID); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPoolAcquireRelease is acquire+release over HTTP against the
// real binary, from a pool of 20 sandboxes: of `base`, and of a template
// whose setup sleeps 2 s (which the pool hides). Workers run in parallel;
// each iteration is one acquire and one release.
func BenchmarkPoolAcquireRelease(b *testing.B) {
	for _, tc := range []struct {
		name, template string
		workers        int
	}{
		{"base/workers=1", "base", 1},
		{"base/workers=4", "base", 4},
		{"setup2s/workers=4", "slow", 4},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var flags []string
			if prof := os.Getenv("SANDPOOL_BENCH_CPU_PROFILE"); prof != "" {
				flags = append(flags, "--cpu-profile", prof)
			}
			s := startServer(b, "", flags...)
			c := s.client("")
			ctx := context.Background()
			if tc.template == "slow" {
				if _, err := c.DefineTemplate(ctx, "slow", "base", client.Hooks{Setup: "sleep 2"}); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := c.CreatePool(ctx, client.PoolConfig{Name: "bench", Template: tc.template, MinIdle: 20, MaxIdle: 40,
				AcquirePolicy: "wait"}); err != nil {
				b.Fatal(err)
			}
			waitPool(b, c, "bench", 20)
			acquireReleaseLoop(b, []*client.Client{c}, tc.workers)
			if err := c.DeletePool(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkPauseResume pauses and resumes a sandbox with 100 MiB written
// (in files and in a process's memory) over HTTP against the real binary:
// frozen (memory kept) and archived (processes stopped, files kept).
func BenchmarkPauseResume(b *testing.B) {
	for _, archive := range []bool{false, true} {
		name := "frozen"
		if archive {
			name = "archive"
		}
		b.Run(name, func(b *testing.B) {
			s := startServer(b, "")
			c := s.client("")
			ctx := context.Background()
			sb, err := c.CreateSandbox(ctx, client.CreateSandboxRequest{Template: "base", Limits: client.Limits{MemoryBytes: 512 << 20}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "head -c 104857600 /dev/urandom > /home/user/data"}); err != nil {
				b.Fatal(err)
			}
			hold := "python3 -c 'import time; b = bytearray(100 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(100000)'"
			var pause, resume, total latency.Recorder
			for b.Loop() {
				if _, err := c.StartProcess(ctx, sb.ID, client.ExecRequest{Shell: hold}); err != nil {
					b.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond) // its 100 MiB are touched
				t0 := time.Now()
				if _, err := c.Pause(ctx, sb.ID, archive); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				r, err := c.Resume(ctx, sb.ID)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				pause.Add(t1.Sub(t0))
				resume.Add(t2.Sub(t1))
				total.Add(t2.Sub(t0))
				if r.ProcessesKept == archive {
					b.Fatalf("processes kept %v after a pause with archive %v", r.ProcessesKept, archive)
				}
				if !archive {
					if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Shell: "pkill -f bytearray; true"}); err != nil {
						b.Fatal(err)
					}
				}
			}
			total.Report(b, "pause_resume")
			pause.Report(b, "pause")
			resume.Report(b, "resume")
		})
	}
}

// BenchmarkScenarios runs each `sandpool bench` scenario once against the
// real binary and reports its figures (time per scenario:
// SANDPOOL_BENCH_DURATION, default 5s; concurrency 4). Run with
// -benchtime 1x.
func BenchmarkScenarios(b *testing.B) {
	for _, name := range bench.Scenarios {
		b.Run(name, func(b *testing.B) {
			s := startServer(b, "")
			// One run per scenario: bench times itself (SANDPOOL_BENCH_DURATION).
			res, err := bench.Run(context.Background(), bench.Config{Client: s.client(""), Scenarios: []string{name},
				Duration: benchDuration(), Concurrency: 4, DensityMax: 100})
			if err != nil {
				b.Fatal(err)
			}
			for k, v := range res {
				b.ReportMetric(v, k)
			}
		})
	}
}

// benchDuration is SANDPOOL_BENCH_DURATION, or 5s.
func benchDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SANDPOOL_BENCH_DURATION")); err == nil && d > 0 {
		return d
	}
	return 5 * time.Second
}

// BenchmarkClusterAcquireRelease is acquire+release over HTTP with the
// store on PostgreSQL: one node, and three nodes with the callers spread
// over them (a pool of 20 base sandboxes, 6 callers).
func BenchmarkClusterAcquireRelease(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := startCluster(b, n)
			ctx := context.Background()
			cs := make([]*client.Client, n)
			for i, s := range nodes {
				cs[i] = s.client("")
			}
			if _, err := cs[0].CreatePool(ctx, client.PoolConfig{Name: "bench", Template: "base", MinIdle: 20, MaxIdle: 40,
				AcquirePolicy: "wait"}); err != nil {
				b.Fatal(err)
			}
			waitPool(b, cs[0], "bench", 20)
			acquireReleaseLoop(b, cs, 6)
			if err := cs[0].DeletePool(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// acquireReleaseLoop runs b.N acquire+release of pool "bench" on workers
// spread over the clients, and reports latency and throughput.
func acquireReleaseLoop(b *testing.B, cs []*client.Client, workers int) {
	ctx := context.Background()
	var rec latency.Recorder
	work := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		c := cs[w%len(cs)]
		wg.Go(func() {
			for range work {
				start := time.Now()
				sb, err := c.Acquire(ctx, "bench", 0)
				if err != nil {
					b.Error(err)
					continue // keep taking work, or the loop would wait forever
				}
				if _, err := c.Release(ctx, sb.ID, false); err != nil {
					b.Error(err)
					continue
				}
				rec.Since(start)
			}
		})
	}
	start := time.Now()
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	rec.Report(b, "acquire_release")
	b.ReportMetric(float64(rec.Count())/time.Since(start).Seconds(), "acquire_release_per_sec")
}
