package linux_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/egress/egresstest"
	"github.com/sandpool/sandpool/internal/runtime"
)

// BenchmarkCreateNetwork measures create-to-ready of a base sandbox
// without a network (egress none: loopback only) and with one (egress
// open: a link is made while PID 1 starts), alternately on one runtime, so
// that both see the same load on the host.
func BenchmarkCreateNetwork(b *testing.B) {
	eng, _ := newEngine(b)
	r := openNetRuntime(b, eng, "")
	ctx := context.Background()
	modes := []runtime.Network{{Egress: runtime.EgressNone}, openNet}
	samples := make([][]time.Duration, len(modes))
	var ids []string
	i := 0
	for b.Loop() {
		m := i % len(modes)
		i++
		start := time.Now()
		info, err := r.Create(ctx, runtime.Spec{Template: "base", Network: modes[m]})
		if err != nil {
			b.Fatal(err)
		}
		samples[m] = append(samples[m], time.Since(start))
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
	for m, n := range modes {
		if len(samples[m]) == 0 {
			continue
		}
		slices.Sort(samples[m])
		pct := func(p float64) float64 {
			return float64(samples[m][int(float64(len(samples[m])-1)*p)].Microseconds()) / 1000
		}
		b.ReportMetric(pct(0.50), n.Mode()+"-p50-ms")
		b.ReportMetric(pct(0.99), n.Mode()+"-p99-ms")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkNetworkConnect measures, from inside a sandbox (Python), a TCP
// connection to the fake internet's echo server and one byte there and
// back; "host" is the same from the host's namespace (Go), for scale.
// b.N connections per run.
func BenchmarkNetworkConnect(b *testing.B) {
	eng, _ := newEngine(b)
	r := openNetRuntime(b, eng, "")
	id := netSandbox(b, r, openNet)
	b.Run("sandbox", func(b *testing.B) {
		out, ok := probe(b, r, id, "conns", "203.0.113.20", strconv.Itoa(egresstest.PortEcho), strconv.Itoa(b.N))
		if !ok {
			b.Fatalf("probe: %s", out)
		}
		var samples []time.Duration
		for _, f := range strings.Fields(out) {
			us, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("probe output %q", out)
			}
			samples = append(samples, time.Duration(us)*time.Microsecond)
		}
		reportMicros(b, samples)
	})
	b.Run("host", func(b *testing.B) {
		var samples []time.Duration
		buf := make([]byte, 1)
		for b.Loop() {
			t0 := time.Now()
			c, err := net.Dial("tcp4", "203.0.113.20:"+strconv.Itoa(egresstest.PortEcho))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(t0))
			c.Close()
		}
		reportMicros(b, samples)
	})
}

// BenchmarkNetworkThroughput measures bulk data from the fake internet
// into a sandbox (Python reading 256 MiB from the bulk server), and the
// same into the host's namespace (Go), for scale.
func BenchmarkNetworkThroughput(b *testing.B) {
	const size = 256 << 20
	eng, _ := newEngine(b)
	r := openNetRuntime(b, eng, "")
	id := netSandbox(b, r, openNet)
	b.Run("sandbox", func(b *testing.B) {
		var total float64
		for b.Loop() {
			out, ok := probe(b, r, id, "bulk", "203.0.113.30", strconv.Itoa(egresstest.PortBulk), strconv.Itoa(size))
			var got int
			var secs float64
			if _, err := fmt.Sscanf(out, "%d %f", &got, &secs); !ok || err != nil || got != size {
				b.Fatalf("probe: %s", out)
			}
			total += secs
		}
		b.ReportMetric(float64(size)*float64(b.N)/total/1e6, "MB/s")
	})
	b.Run("host", func(b *testing.B) {
		var total time.Duration
		buf := make([]byte, 1<<20)
		for b.Loop() {
			t0 := time.Now()
			c, err := net.Dial("tcp4", "203.0.113.30:"+strconv.Itoa(egresstest.PortBulk))
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(c, "%d\n", size)
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{bufio.NewReaderSize(c, 1<<20)}, buf)
			c.Close()
			if err != nil || n != size {
				b.Fatalf("read %d: %v", n, err)
			}
			total += time.Since(t0)
		}
		b.ReportMetric(float64(size)*float64(b.N)/total.Seconds()/1e6, "MB/s")
	})
}

// reportMicros adds p50 and p99 of samples, in microseconds.
func reportMicros(b *testing.B, samples []time.Duration) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	pct := func(p float64) float64 { return float64(samples[int(float64(len(samples)-1)*p)].Nanoseconds()) / 1e3 }
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
	b.ReportMetric(0, "ns/op")
}
