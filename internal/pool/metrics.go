package pool

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	sandboxes      *prometheus.GaugeVec
	acquires       *prometheus.CounterVec
	acquireLatency *prometheus.HistogramVec
	destroyed      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		sandboxes: f.NewGaugeVec(prometheus.GaugeOpts{Name: "sandpool_pool_sandboxes",
			Help: "Sandboxes of a pool by state: idle, in_use, creating, resetting."}, []string{"pool", "state"}),
		acquires: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_pool_acquires_total",
			Help: "Acquires by outcome: reused, created, empty, failed."}, []string{"pool", "outcome"}),
		acquireLatency: f.NewHistogramVec(prometheus.HistogramOpts{Name: "sandpool_pool_acquire_duration_seconds",
			Help: "Time to hand out a sandbox.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"pool"}),
		destroyed: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_pool_sandboxes_destroyed_total",
			Help: "Pool sandboxes destroyed by reason: max_uses, idle, health, fatal, drain."}, []string{"pool", "reason"}),
	}
}

func (m *metrics) observe(pool string, in Info) {
	m.sandboxes.WithLabelValues(pool, "idle").Set(float64(in.Idle))
	m.sandboxes.WithLabelValues(pool, "in_use").Set(float64(in.InUse))
	m.sandboxes.WithLabelValues(pool, "creating").Set(float64(in.Creating))
	m.sandboxes.WithLabelValues(pool, "resetting").Set(float64(in.Resetting))
}

// forget drops a deleted pool's gauges.
func (m *metrics) forget(pool string) {
	for _, s := range []string{"idle", "in_use", "creating", "resetting"} {
		m.sandboxes.DeleteLabelValues(pool, s)
	}
}
