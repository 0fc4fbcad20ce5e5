// Package latency collects durations and reports their percentiles, for
// benchmarks and for `sandpool bench`.
package latency

import (
	"slices"
	"sync"
	"time"
)

// Recorder collects durations. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	samples []time.Duration
}

// Add records one duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

// Since records the time since start.
func (r *Recorder) Since(start time.Time) { r.Add(time.Since(start)) }

// Count is how many durations were recorded.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.samples)
}

// Percentile returns the p-th percentile (0 < p <= 100) by the
// nearest-rank method, or 0 when nothing was recorded.
func (r *Recorder) Percentile(p float64) time.Duration {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// Ms returns the p-th percentile in milliseconds.
func (r *Recorder) Ms(p float64) float64 {
	return float64(r.Percentile(p).Microseconds()) / 1000
}

// Reporter is what testing.B offers to report metrics.
type Reporter interface {
	ReportMetric(n float64, unit string)
}

// Report reports p50 and p99 as "<name>_p50_ms" and "<name>_p99_ms".
func (r *Recorder) Report(b Reporter, name string) {
	b.ReportMetric(r.Ms(50), name+"_p50_ms")
	b.ReportMetric(r.Ms(99), name+"_p99_ms")
}
