package linux_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/image/imagetest"
	"github.com/sandpool/sandpool/internal/proc"
	"github.com/sandpool/sandpool/internal/runtime"
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
