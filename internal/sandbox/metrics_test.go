package sandbox_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sandpool/sandpool/internal/sandbox"
)

// metricValue is the value of one series of reg (a counter or gauge, or a
// histogram's count), 0 if it is absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// The metrics an operator graphs first move: sandboxes by status, creates
// by outcome, create and exec durations, capacity in use. No sandbox id is
// ever a label.
func TestMetricsMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, sandbox.Config{Registry: reg, MaxSandboxes: 7})
	ctx := context.Background()
	get := func(name string, labels map[string]string) float64 { return metricValue(t, reg, name, labels) }

	if got := get("sandpool_node_max_sandboxes", nil); got != 7 {
		t.Fatalf("max sandboxes %v", got)
	}
	sb := e.create(t, "a", sandbox.CreateRequest{Template: "base"})
	if _, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "nope"}); err == nil {
		t.Fatal("created from an unknown template")
	}
	if _, err := e.svc.DefineTemplate(ctx, "broken", "base", sandbox.Hooks{Setup: "exit 1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Create(ctx, "a", "", sandbox.CreateRequest{Template: "broken"}); err == nil {
		t.Fatal("created from a broken template")
	}
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"outcome": "ok", "template": "base"}, 1},
		{map[string]string{"outcome": "refused", "template": ""}, 1},
		{map[string]string{"outcome": "failed", "template": "broken"}, 1},
	} {
		if got := get("sandpool_sandbox_creates_total", c.labels); got != c.want {
			t.Errorf("creates %v: %v, want %v", c.labels, got, c.want)
		}
	}
	if got := get("sandpool_sandbox_create_duration_seconds", map[string]string{"template": "base"}); got != 1 {
		t.Errorf("create durations observed: %v", got)
	}
	if got := get("sandpool_sandboxes", map[string]string{"status": "running"}); got != 1 {
		t.Errorf("running sandboxes: %v", got)
	}
	if got := get("sandpool_sandboxes", map[string]string{"status": "failed"}); got != 1 {
		t.Errorf("failed sandboxes: %v", got)
	}
	if got := get("sandpool_node_active_sandboxes", nil); got != 1 {
		t.Errorf("active sandboxes: %v", got)
	}
	before := get("sandpool_exec_duration_seconds", nil)
	e.run(t, "a", sb.ID, "true")
	if got := get("sandpool_exec_duration_seconds", nil); got != before+1 {
		t.Errorf("exec durations observed: %v, want %v", got, before+1)
	}
	if err := e.svc.Delete(ctx, "a", sb.ID); err != nil {
		t.Fatal(err)
	}
	if got := get("sandpool_sandboxes", map[string]string{"status": "stopped"}); got != 1 {
		t.Errorf("stopped sandboxes: %v", got)
	}
	if got := get("sandpool_node_active_sandboxes", nil); got != 0 {
		t.Errorf("active sandboxes after delete: %v", got)
	}
	// No series is labelled with a sandbox id.
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == sb.ID {
					t.Fatalf("%s is labelled with a sandbox id", mf.GetName())
				}
			}
		}
	}
}
