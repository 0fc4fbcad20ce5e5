package linux_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
)

// reportPercentiles adds p50 and p99 of samples to the benchmark's output.
func reportPercentiles(b *testing.B, samples []time.Duration) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	pct := func(p float64) float64 {
		return float64(samples[int(float64(len(samples)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCreate measures create-to-ready of a base sandbox.
func BenchmarkCreate(b *testing.B) {
	r := openRuntime(b)
	ctx := context.Background()
	samples := make([]time.Duration, 0, b.N)
	var ids []string
	for b.Loop() {
		start := time.Now()
		info, err := r.Create(ctx, runtime.Spec{Template: "base"})
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		ids = append(ids, info.ID)
		if len(ids) >= 20 { // keep the host's sandbox count bounded
			b.StopTimer()
			for _, id := range ids {
				if err := r.Destroy(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			ids = ids[:0]
			b.StartTimer()
		}
	}
	reportPercentiles(b, samples)
}

// BenchmarkDestroy measures destroying an idle base sandbox.
func BenchmarkDestroy(b *testing.B) {
	r := openRuntime(b)
	ctx := context.Background()
	samples := make([]time.Duration, 0, b.N)
	for b.Loop() {
		b.StopTimer()
		info, err := r.Create(ctx, runtime.Spec{Template: "base"})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := r.Destroy(ctx, info.ID); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	reportPercentiles(b, samples)
}

// BenchmarkExec measures the round trip of running `true`.
func BenchmarkExec(b *testing.B) {
	r := openRuntime(b)
	ctx := context.Background()
	id := createSandbox(b, r, runtime.Spec{Template: "base"})
	samples := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		p, err := r.Exec(ctx, id, proc.Spec{Cmd: []string{"true"}}, proc.Stdio{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
		samples = append(samples, time.Since(start))
	}
	reportPercentiles(b, samples)
}

// BenchmarkReset measures ending a session that ran a command: the fast
// path (in place), and the full one after a file was written.
func BenchmarkReset(b *testing.B) {
	r := openRuntime(b)
	ctx := context.Background()
	id := createSandbox(b, r, runtime.Spec{Template: "base"})
	for _, tc := range []struct {
		name, shell string
	}{{"in_place", "true"}, {"restart", "echo x > /tmp/x"}} {
		b.Run(tc.name, func(b *testing.B) {
			samples := make([]time.Duration, 0, b.N)
			for b.Loop() {
				sh(b, r, id, tc.shell)
				start := time.Now()
				if _, err := r.Reset(ctx, id); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			reportPercentiles(b, samples)
		})
	}
}

// BenchmarkCreateSteps measures create-to-ready of a base sandbox and what
// each of its steps costs (the p50 of each, in ms). Creates are 20 ms
// apart, as a caller's cold creates are, so the spare PID 1s are ready
// (BenchmarkCreate, back to back, also measures how fast spares are made).
func BenchmarkCreateSteps(b *testing.B) {
	var mu sync.Mutex
	steps := map[string][]time.Duration{}
	r := linuxtest.OpenWith(b, linux.Config{Observe: func(step string, d time.Duration) {
		mu.Lock()
		steps[step] = append(steps[step], d)
		mu.Unlock()
	}})
	ctx := context.Background()
	var total []time.Duration
	var ids []string
	for b.Loop() {
		b.StopTimer()
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		info, err := r.Create(ctx, runtime.Spec{Template: "base"})
		if err != nil {
			b.Fatal(err)
		}
		total = append(total, time.Since(start))
		ids = append(ids, info.ID)
		if len(ids) >= 20 {
			b.StopTimer()
			for _, id := range ids {
				if err := r.Destroy(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			ids = ids[:0]
			b.StartTimer()
		}
	}
	b.StopTimer()
	for _, id := range ids {
		_ = r.Destroy(ctx, id) // best effort: the runtime's Close and the test's cleanup catch the rest
	}
	median := func(d []time.Duration) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(median(total), "p50-ms")
	for _, s := range linux.BootSteps {
		if len(steps[s]) > 0 {
			b.ReportMetric(median(steps[s]), s+"-ms")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCreateImage measures create-to-ready of a sandbox of an image
// template (busybox and four more layers, the image's user, env and
// working directory) against base, alternating the two so both see the
// same host. The figures: base-p50-ms, image-p50-ms, image-p99-ms and
// delta-p50-ms (image minus base).
func BenchmarkCreateImage(b *testing.B) {
	r := openRuntime(b)
	ctx := context.Background()
	layers := [][]imagetest.Entry{append(imagetest.Busybox(b), imagetest.Dir("app/", 0o755))}
	for i := range 4 {
		layers = append(layers, []imagetest.Entry{imagetest.Dir("app/", 0o755), imagetest.File(fmt.Sprintf("app/%d", i), "x", 0o644)})
	}
	layeredTemplate(b, r, "img", runtime.Defaults{User: "1000:1000", Env: []string{"APP=1"}, Cwd: "/app"}, layers...)
	var baseS, imgS []time.Duration
	var ids []string
	for i := 0; b.Loop(); i++ {
		for j := range 2 {
			tpl := "base"
			if (i+j)%2 == 1 {
				tpl = "img"
			}
			start := time.Now()
			info, err := r.Create(ctx, runtime.Spec{Template: tpl})
			if err != nil {
				b.Fatal(err)
			}
			if tpl == "base" {
				baseS = append(baseS, time.Since(start))
			} else {
				imgS = append(imgS, time.Since(start))
			}
			ids = append(ids, info.ID)
		}
		if len(ids) >= 20 {
			b.StopTimer()
			for _, id := range ids {
				if err := r.Destroy(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			ids = ids[:0]
			b.StartTimer()
		}
	}
	pct := func(s []time.Duration, p float64) float64 {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(float64(len(s)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(baseS, 0.5), "base-p50-ms")
	b.ReportMetric(pct(imgS, 0.5), "image-p50-ms")
	b.ReportMetric(pct(imgS, 0.99), "image-p99-ms")
	b.ReportMetric(pct(imgS, 0.5)-pct(baseS, 0.5), "delta-p50-ms")
	b.ReportMetric(0, "ns/op")
}
