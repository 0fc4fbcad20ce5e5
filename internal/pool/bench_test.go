package pool_test

import (
	"context"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/latency"
	"github.com/sandpool/sandpool/internal/pool"
)

// BenchmarkAcquireRelease is acquire+release through the manager, without
// HTTP, from a pool of 20 base sandboxes.
func BenchmarkAcquireRelease(b *testing.B) {
	e := newEnvB(b)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, "t", pool.Config{Name: "p", Template: "base", MinIdle: 20, MaxIdle: 40, AcquirePolicy: pool.Wait}); err != nil {
		b.Fatal(err)
	}
	for {
		in, _ := e.m.Get(ctx, "t", "p")
		if in.Idle >= 20 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var rec, acq, rel latency.Recorder
	for b.Loop() {
		start := time.Now()
		sb, err := e.m.Acquire(ctx, "t", "p", 0)
		if err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := e.m.Release(ctx, "t", sb.ID, ""); err != nil {
			b.Fatal(err)
		}
		rec.Since(start)
		acq.Add(mid.Sub(start))
		rel.Since(mid)
	}
	rec.Report(b, "acquire_release")
	acq.Report(b, "acquire")
	rel.Report(b, "release")
}
