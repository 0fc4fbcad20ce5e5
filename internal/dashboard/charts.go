package dashboard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// Metrics charts on a sandbox's page. While someone has the page open, its
// live stream measures the sandbox every sampleEvery (Service.Metrics:
// cgroup and disk figures, not activity, no resume); the samples are kept
// here for chartWindow, shared by everyone viewing that sandbox, and drawn
// on the server as small SVG charts (no chart library in the page).

const (
	sampleEvery = 2 * time.Second
	chartWindow = 2 * time.Minute
	// metricsKept bounds the sandboxes with samples; those not viewed for
	// a chart window are forgotten first.
	metricsKept = 1000
)

// samples keeps recent measurements of the sandboxes being viewed.
type samples struct {
	mu sync.Mutex
	m  map[string][]sandbox.Metrics
}

func newSamples() *samples { return &samples{m: map[string][]sandbox.Metrics{}} }

// add records a measurement and returns the sandbox's samples within the
// window, oldest first.
func (s *samples) add(id string, m sandbox.Metrics) []sandbox.Metrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := m.Timestamp.Add(-chartWindow)
	list := s.m[id]
	if n := len(list); n > 0 && m.Timestamp.Sub(list[n-1].Timestamp) < sampleEvery/2 {
		return clone(list) // another viewer measured it just now
	}
	list = append(list, m)
	i := 0
	for i < len(list) && list[i].Timestamp.Before(cut) {
		i++
	}
	list = append(list[:0:0], list[i:]...)
	s.m[id] = list
	if len(s.m) > metricsKept {
		for k, l := range s.m {
			if len(l) == 0 || l[len(l)-1].Timestamp.Before(cut) {
				delete(s.m, k)
			}
		}
	}
	return clone(list)
}

// get returns what is kept of a sandbox.
func (s *samples) get(id string) []sandbox.Metrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clone(s.m[id])
}

func clone(l []sandbox.Metrics) []sandbox.Metrics { return append([]sandbox.Metrics(nil), l...) }

// metricsData is the metrics section of a sandbox's page (a fragment,
// replaced live).
type metricsData struct {
	Problem string
	Charts  []chart
}

// chart is one small chart: a series drawn as an SVG polyline, with its
// figures said in words for those who cannot see it.
type chart struct {
	ID     string
	Label  string
	Now    string
	Peak   string
	Top    string // the top of the scale
	Points string // "x,y x,y ..." in a 0..chartW by 0..chartH box
}

const chartW, chartH = 300, 60

// measure samples a sandbox now (if the view is live) and builds its
// charts.
func (s *Server) measure(ctx context.Context, sess *session, h sbHead, sample bool) metricsData {
	switch {
	case !h.Local:
		return metricsData{Problem: "This sandbox lives on node " + h.SB.NodeName + ", which measures it."}
	case h.SB.Status != sandbox.StatusRunning && h.SB.Status != sandbox.StatusPaused &&
		h.SB.Status != sandbox.StatusReady && h.SB.Status != sandbox.StatusResetting:
		return metricsData{Problem: "The sandbox is " + string(h.SB.Status) + ": there is nothing to measure."}
	}
	list := s.samples.get(h.SB.ID)
	if sample || len(list) == 0 {
		m, err := s.svc.Metrics(ctx, sess.tenant, h.SB.ID)
		if err != nil {
			return metricsData{Problem: s.problem(err)}
		}
		list = s.samples.add(h.SB.ID, m)
	}
	return charts(list)
}

func charts(list []sandbox.Metrics) metricsData {
	if len(list) == 0 {
		return metricsData{Problem: "No measurements yet."}
	}
	last := list[len(list)-1]
	cpu := func(m sandbox.Metrics) float64 { return m.CPUUsedPct }
	mem := func(m sandbox.Metrics) float64 { return float64(m.MemUsedBytes) }
	disk := func(m sandbox.Metrics) float64 { return float64(m.DiskUsedBytes) }
	pct := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + "%" }
	byt := func(v float64) string { return humanBytes(int64(v)) }
	// Each chart is scaled to what it shows (a quarter above its peak, at
	// least a small floor): a sandbox far below its limits still draws a
	// shape. The top of the scale is said with the chart.
	return metricsData{Charts: []chart{
		mkChart(list, "cpu", fmt.Sprintf("CPU (%d allowed)", last.CPUCount), cpu, scale(list, cpu, 5), pct),
		mkChart(list, "mem", "Memory (limit "+humanBytes(last.MemTotalBytes)+")", mem, scale(list, mem, 1<<20), byt),
		mkChart(list, "disk", "Disk written", disk, scale(list, disk, 1<<20), byt),
	}}
}

// scale is the top of a chart: a quarter above the peak, at least floor.
func scale(list []sandbox.Metrics, f func(sandbox.Metrics) float64, floor float64) float64 {
	return max(peak(list, f)*1.25, floor)
}

func peak(list []sandbox.Metrics, f func(sandbox.Metrics) float64) float64 {
	p := 0.0
	for _, m := range list {
		p = max(p, f(m))
	}
	return p
}

// mkChart draws f over the window ending at the last sample, from 0 at
// the bottom to top at the top.
func mkChart(list []sandbox.Metrics, id, label string, f func(sandbox.Metrics) float64, top float64, say func(float64) string) chart {
	last := list[len(list)-1]
	start := last.Timestamp.Add(-chartWindow)
	var b strings.Builder
	for i, m := range list {
		x := float64(chartW) * float64(m.Timestamp.Sub(start)) / float64(chartWindow)
		y := float64(chartH)
		if top > 0 {
			y = float64(chartH) * (1 - min(f(m), top)/top)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", max(x, 0), y)
	}
	if len(list) == 1 { // one point: a flat line across, so there is something to see
		y := b.String()[strings.IndexByte(b.String(), ',')+1:]
		b.Reset()
		fmt.Fprintf(&b, "0.0,%s %d.0,%s", y, chartW, y)
	}
	return chart{ID: id, Label: label, Now: say(f(last)), Peak: say(peak(list, f)), Top: say(top), Points: b.String()}
}
