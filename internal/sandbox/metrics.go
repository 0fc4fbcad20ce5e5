package sandbox

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sandpool/sandpool/internal/store"
)

type metrics struct {
	creates        *prometheus.CounterVec
	createDuration *prometheus.HistogramVec
	execDuration   prometheus.Histogram

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
		creates: f.NewCounterVec(prometheus.CounterOpts{Name: "sandpool_sandbox_creates_total",
			Help: "Sandbox creates on this node (pools' included), by outcome (ok, failed: the runtime or the template's setup failed; refused: a bad request, an unknown template, no capacity) and template (empty when refused)."},
			[]string{"outcome", "template"}),
		createDuration: f.NewHistogramVec(prometheus.HistogramOpts{Name: "sandpool_sandbox_create_duration_seconds",
			Help:    "Time to create a sandbox until it is ready (setup hooks included), by template; successful creates only.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"template"}),
		execDuration: f.NewHistogram(prometheus.HistogramOpts{Name: "sandpool_exec_duration_seconds",
			Help:    "Time from starting a process to its exit, for processes whose caller waited for them.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 22)}),
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

// created counts a create's outcome and, for a success, its duration.
func (m *metrics) created(template string, start time.Time, err error) {
	outcome := "ok"
	switch {
	case err != nil && template == "":
		outcome = "refused"
	case err != nil:
		outcome = "failed"
	}
	m.creates.WithLabelValues(outcome, template).Inc()
	if err == nil {
		m.createDuration.WithLabelValues(template).Observe(time.Since(start).Seconds())
	}
}

// nodeCollector reports, at each scrape, the sandboxes this node holds by
// status and its capacity, from the store (one query).
type nodeCollector struct {
	s        *Service
	byStatus *prometheus.Desc
	capacity *prometheus.Desc
	active   *prometheus.Desc
	// The node's GPUs (from memory: the service holds who has which).
	gpus, gpusInUse, gpuHolders, gpuInfo *prometheus.Desc
}

func newNodeCollector(s *Service) *nodeCollector {
	return &nodeCollector{s: s,
		byStatus:  prometheus.NewDesc("sandpool_sandboxes", "Sandboxes this node holds, by status (the store's view; stopped, failed and lost ones stay until deleted).", []string{"status"}, nil),
		capacity:  prometheus.NewDesc("sandpool_node_max_sandboxes", "Sandboxes this node may run at once (--max-sandboxes).", nil, nil),
		active:    prometheus.NewDesc("sandpool_node_active_sandboxes", "Sandboxes that exist on this node now (count against --max-sandboxes).", nil, nil),
		gpus:      prometheus.NewDesc("sandpool_node_gpus", "GPUs this node hands out to sandboxes (--gpus).", nil, nil),
		gpusInUse: prometheus.NewDesc("sandpool_node_gpus_in_use", "GPUs of this node held by at least one sandbox.", nil, nil),
		gpuHolders: prometheus.NewDesc("sandpool_gpu_sandboxes", "Sandboxes holding each GPU (at most 1 without --gpu-sharing), by GPU index.",
			[]string{"gpu"}, nil),
		gpuInfo: prometheus.NewDesc("sandpool_gpu_info", "Each GPU this node hands out (always 1): index, UUID, model and memory.",
			[]string{"gpu", "uuid", "model", "memory_bytes"}, nil),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.byStatus
	ch <- c.capacity
	ch <- c.active
	ch <- c.gpus
	ch <- c.gpusInUse
	ch <- c.gpuHolders
	ch <- c.gpuInfo
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(c.s.cfg.MaxSandboxes))
	inUse := 0
	for _, u := range c.s.gpus.Usage() {
		gpu := strconv.Itoa(u.Index)
		ch <- prometheus.MustNewConstMetric(c.gpuHolders, prometheus.GaugeValue, float64(len(u.Holders)), gpu)
		ch <- prometheus.MustNewConstMetric(c.gpuInfo, prometheus.GaugeValue, 1, gpu, u.UUID, u.Model, strconv.FormatInt(u.MemoryBytes, 10))
		if len(u.Holders) > 0 {
			inUse++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.gpus, prometheus.GaugeValue, float64(c.s.gpus.Total()))
	ch <- prometheus.MustNewConstMetric(c.gpusInUse, prometheus.GaugeValue, float64(inUse))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.s.st.CountByStatus(ctx, store.Filter{Node: c.s.cfg.Node})
	if err != nil {
		c.s.cfg.Log.Warn("metrics: count sandboxes", "err", err)
		return
	}
	active := 0
	for _, st := range Active {
		active += n[string(st)]
	}
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(active))
	for _, st := range allStatuses {
		ch <- prometheus.MustNewConstMetric(c.byStatus, prometheus.GaugeValue, float64(n[string(st)]), string(st))
	}
}
