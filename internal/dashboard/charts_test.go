package dashboard

import (
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/internal/sandbox"
)

func TestSamples(t *testing.T) {
	s := newSamples()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for i := range 100 { // 200 s of samples, every 2 s
		s.add("sb", sandbox.Metrics{Timestamp: t0.Add(time.Duration(i) * sampleEvery), CPUUsedPct: float64(i)})
	}
	list := s.get("sb")
	if n := len(list); n != int(chartWindow/sampleEvery)+1 {
		t.Fatalf("%d samples kept, want the window's %d", n, chartWindow/sampleEvery+1)
	}
	if list[len(list)-1].CPUUsedPct != 99 || list[0].Timestamp.Before(list[len(list)-1].Timestamp.Add(-chartWindow)) {
		t.Fatalf("kept %v .. %v", list[0], list[len(list)-1])
	}
	// A second viewer measuring at once adds nothing.
	last := list[len(list)-1]
	s.add("sb", sandbox.Metrics{Timestamp: last.Timestamp.Add(100 * time.Millisecond), CPUUsedPct: -1})
	if got := s.get("sb"); got[len(got)-1].CPUUsedPct != 99 {
		t.Fatal("a measurement right after another was kept")
	}
}

func TestCharts(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	list := []sandbox.Metrics{
		{Timestamp: t0, CPUCount: 2, CPUUsedPct: 0, MemUsedBytes: 64 << 20, MemTotalBytes: 512 << 20, DiskUsedBytes: 1 << 20},
		{Timestamp: t0.Add(chartWindow / 2), CPUCount: 2, CPUUsedPct: 150, MemUsedBytes: 256 << 20, MemTotalBytes: 512 << 20},
		{Timestamp: t0.Add(chartWindow), CPUCount: 2, CPUUsedPct: 50, MemUsedBytes: 128 << 20, MemTotalBytes: 512 << 20},
	}
	d := charts(list)
	if d.Problem != "" || len(d.Charts) != 3 {
		t.Fatalf("%+v", d)
	}
	cpu, mem := d.Charts[0], d.Charts[1]
	// x runs over the window; y from the bottom (60) to the top (0) of a
	// scale a quarter above the peak.
	if cpu.Points != "0.0,60.0 150.0,12.0 300.0,44.0" || cpu.Now != "50.0%" || cpu.Peak != "150.0%" || cpu.Top != "187.5%" || !strings.Contains(cpu.Label, "2 allowed") {
		t.Fatalf("cpu chart %+v", cpu)
	}
	if mem.Points != "0.0,48.0 150.0,12.0 300.0,36.0" || mem.Now != "128.0 MiB" || mem.Peak != "256.0 MiB" || mem.Top != "320.0 MiB" {
		t.Fatalf("memory chart %+v", mem)
	}
	if one := charts(list[:1]); one.Charts[0].Points != "0.0,60.0 300.0,60.0" {
		t.Fatalf("one sample: %q", one.Charts[0].Points)
	}
}
