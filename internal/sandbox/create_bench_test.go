package sandbox_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/events"
	"github.com/sandpool/sandpool/internal/runtime"
	"github.com/sandpool/sandpool/internal/runtime/linux"
	"github.com/sandpool/sandpool/internal/runtime/linux/linuxtest"
	"github.com/sandpool/sandpool/internal/sandbox"
	"github.com/sandpool/sandpool/internal/store/storetest"
)

// BenchmarkCreateLayers measures a base sandbox's create-to-ready through
// the lifecycle service (SQLite store) against the runtime's own create,
// alternating the two so both see the same host, 20 ms apart as a
// caller's cold creates are. Reports each p50 and the service's overhead
// (store rows, events, metrics), in ms.
func BenchmarkCreateLayers(b *testing.B) {
	rt := linuxtest.OpenWith(b, linux.Config{})
	svc := sandbox.New(rt, storetest.SQLite(b), events.NewBroker(), sandbox.Config{Node: "n1"})
	if err := svc.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(svc.Close)
	ctx := context.Background()
	var viaService, viaRuntime []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		if i%2 == 0 {
			sb, err := svc.Create(ctx, "t", "", sandbox.CreateRequest{Template: "base"})
			if err != nil {
				b.Fatal(err)
			}
			viaService = append(viaService, time.Since(start))
			b.StopTimer()
			if err := svc.Delete(ctx, "t", sb.ID); err != nil {
				b.Fatal(err)
			}
		} else {
			info, err := rt.Create(ctx, runtime.Spec{Template: "base"})
			if err != nil {
				b.Fatal(err)
			}
			viaRuntime = append(viaRuntime, time.Since(start))
			b.StopTimer()
			if err := rt.Destroy(ctx, info.ID); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	p50 := func(d []time.Duration) float64 {
		if len(d) == 0 {
			return 0
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(viaService), "service-p50-ms")
	b.ReportMetric(p50(viaRuntime), "runtime-p50-ms")
	b.ReportMetric(p50(viaService)-p50(viaRuntime), "overhead-ms")
	b.ReportMetric(0, "ns/op")
}
