package latency

import (
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var r Recorder
	if r.Percentile(50) != 0 {
		t.Fatal("empty recorder")
	}
	for i := 100; i >= 1; i-- {
		r.Add(time.Duration(i) * time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := r.Percentile(p); got != want {
			t.Errorf("p%g = %v, want %v", p, got, want)
		}
	}
	if r.Ms(50) != 50 {
		t.Errorf("Ms(50) = %g", r.Ms(50))
	}
}

func TestConcurrentAdd(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range 1000 {
				r.Add(time.Microsecond)
				if i%100 == 0 {
					_ = r.Percentile(99)
				}
			}
		})
	}
	wg.Wait()
	if r.Count() != 16000 {
		t.Fatalf("count %d", r.Count())
	}
}
