package sandbox

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	pauses        *prometheus.CounterVec
	archives      prometheus.Counter
	resumes       *prometheus.CounterVec
	resumeLatency *prometheus.HistogramVec
	timeouts      *prometheus.CounterVec
	reconciles    prometheus.Counter
	fixes         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		pauses: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_sandbox_pauses_total",
			Help: "Sandboxes paused, by reason (requested, timeout)."}, []string{"reason"}),
		archives: f.NewCounter(prometheus.CounterOpts{Name: "sandpool_sandbox_archives_total",
			Help: "Paused sandboxes archived (processes stopped, files kept)."}),
		resumes: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_sandbox_resumes_total",
			Help: "Sandboxes resumed, by what they resumed from (frozen, archive)."}, []string{"from"}),
		resumeLatency: f.NewHistogramVec(prometheus.HistogramOpts{Name: "sandpool_sandbox_resume_duration_seconds",
			Help: "Time to resume a sandbox.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"from"}),
		timeouts: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_sandbox_timeouts_total",
			Help: "Sandboxes idle past their timeout, by action (pause, kill)."}, []string{"action"}),
		reconciles: f.NewCounter(prometheus.CounterOpts{Name: "sandpool_reconcile_passes_total",
			Help: "Completed passes of the reconciler."}),
		fixes: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_reconcile_fixes_total",
			Help: "Differences between runtime and store the reconciler resolved, by action."}, []string{"action"}),
	}
}
