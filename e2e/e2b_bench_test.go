package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"github.com/sandpool/sandpool/client"
)

// BenchmarkE2BCreateToFirstOutput: with the published JS SDK, from
// Sandbox.create() to the first stdout bytes of a command in the new
// sandbox, for a cold `base` sandbox and for a template with a warm pool
// (whose create is an acquire). Set SANDPOOL_BENCH_N for the samples per
// template (default 50).
//
//	go test ./e2e -run XXX -bench E2BCreateToFirstOutput -benchtime 1x
func BenchmarkE2BCreateToFirstOutput(b *testing.B) {
	s := startServer(b, "")
	ctx := context.Background()
	key := s.e2bKey("bench")
	admin, tenant := s.client(""), s.client(key)
	if _, err := admin.AddTemplate(ctx, client.TemplateRequest{Name: "warm", From: "base", Hooks: client.Hooks{Setup: "echo set up > /tmp/ready"}}, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := tenant.CreatePool(ctx, client.PoolConfig{Name: "warm", Template: "warm", MinIdle: 4, AcquirePolicy: "wait"}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tenant.DeletePool(context.Background(), "warm") })
	n := 50
	if v, err := strconv.Atoi(os.Getenv("SANDPOOL_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		var got map[string]struct{ P50, P90, P99, Min float64 }
		last := runE2BNode(b, s, "bench.mjs", "e2b251", key, "E2B_BENCH_TEMPLATES=base,warm", "E2B_BENCH_N="+strconv.Itoa(n))
		if err := json.Unmarshal([]byte(last), &got); err != nil {
			b.Fatalf("bench.mjs printed %q: %v", last, err)
		}
		b.ReportMetric(got["base"].P50, "cold_p50_ms")
		b.ReportMetric(got["base"].P99, "cold_p99_ms")
		b.ReportMetric(got["warm"].P50, "pooled_p50_ms")
		b.ReportMetric(got["warm"].P99, "pooled_p99_ms")
	}
}
