package egress

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"
)

// percentiles reports p50 and p99 of ds (in unit) as benchmark metrics.
func percentiles(b *testing.B, ds []time.Duration, unit time.Duration, name string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	u := float64(unit)
	b.ReportMetric(float64(ds[len(ds)/2])/u, name+"-p50")
	b.ReportMetric(float64(ds[len(ds)*99/100])/u, name+"-p99")
}

// BenchmarkAttach: Attach (TUN in the sandbox's namespace, address,
// route, stack) and Close, on one sandbox namespace.
func BenchmarkAttach(b *testing.B) {
	e, _ := newEngine(b)
	sb := newSandboxNS(b, true)
	pol := mustPolicy("open")
	var attach, close_ []time.Duration
	for b.Loop() {
		t0 := time.Now()
		l, err := e.Attach(context.Background(), Sandbox{ID: "bench", NetNS: sb.path}, pol)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		attach, close_ = append(attach, t1.Sub(t0)), append(close_, time.Since(t1))
	}
	percentiles(b, attach, time.Millisecond, "attach-ms")
	percentiles(b, close_, time.Millisecond, "close-ms")
}

// BenchmarkConnect: a TCP connection from the sandbox through the link
// to the fake internet's echo server, one byte there and back, closed.
// "direct" is the same from the host's namespace, for comparison.
func BenchmarkConnect(b *testing.B) {
	e, _ := newEngine(b)
	sb, _ := attach(b, e, false, "open", nil, nil)
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"egress", func() (net.Conn, error) { return sb.dial(context.Background(), "203.0.113.20:7000") }},
		{"direct", func() (net.Conn, error) { return net.Dial("tcp4", "203.0.113.20:7000") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var ds []time.Duration
			buf := make([]byte, 1)
			for b.Loop() {
				t0 := time.Now()
				c, err := tc.dial()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				c.Close()
			}
			percentiles(b, ds, time.Microsecond, "connect+rtt-us")
		})
	}
}

// BenchmarkThroughput: bulk data from the fake internet into the sandbox
// (32 MiB per operation), at the default MTU and at 1500; "direct" is
// the host's own kernel path for comparison.
func BenchmarkThroughput(b *testing.B) {
	const n = 32 << 20
	for _, mtu := range []int{65520, 1500} {
		b.Run(fmt.Sprintf("egress-mtu%d", mtu), func(b *testing.B) {
			e, _ := newEngine(b, func(c *Config) { c.MTU = mtu })
			sb, _ := attach(b, e, false, "open", nil, nil)
			b.SetBytes(n)
			for b.Loop() {
				if got := bulk(b, sb, "203.0.113.30:9000", n); got != n {
					b.Fatalf("read %d bytes", got)
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(n)
		for b.Loop() {
			c, err := net.Dial("tcp4", "203.0.113.30:9000")
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(c, "%d\n", n)
			if got, _ := io.Copy(io.Discard, c); got != n {
				b.Fatalf("read %d bytes", got)
			}
			c.Close()
		}
	})
}

// BenchmarkLinkMemory: Go heap and goroutine stacks held per idle
// attached link (100 links, one per sandbox namespace).
func BenchmarkLinkMemory(b *testing.B) {
	e, _ := newEngine(b)
	const links = 100
	var sbs []*sandboxNS
	for range links {
		sbs = append(sbs, newSandboxNS(b, false))
	}
	pol := mustPolicy("open")
	for b.Loop() {
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		g0 := runtime.NumGoroutine()
		var ls []*Link
		for _, sb := range sbs {
			l, err := e.Attach(context.Background(), Sandbox{ID: "mem", NetNS: sb.path}, pol)
			if err != nil {
				b.Fatal(err)
			}
			ls = append(ls, l)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		g1 := runtime.NumGoroutine()
		b.ReportMetric(float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse))/links/1024, "KiB/link")
		b.ReportMetric(float64(g1-g0)/links, "goroutines/link")
		for _, l := range ls {
			l.Close()
		}
	}
}
