package egress

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the values of the "reason" label.
const (
	reasonBlocked  = "blocked_address" // always-refused range, host address, sandbox link
	reasonPolicy   = "policy"          // mode none, a deny rule, or not on the allow list
	reasonNoName   = "no_name"         // a rule needed a name the stream did not give
	reasonMismatch = "name_mismatch"   // the name is allowed, but never resolved to this address here
	reasonLimit    = "limit"           // the sandbox's connection limit
)

// metrics are the engine's Prometheus totals, summed over sandboxes: no
// label carries a sandbox ID.
type metrics struct {
	links    prometheus.Gauge
	conns    *prometheus.CounterVec // outcome
	refusals *prometheus.CounterVec // reason
	bytes    *prometheus.CounterVec // direction
	dns      *prometheus.CounterVec // outcome
	attach   prometheus.Histogram

	allowed, failed    prometheus.Counter
	bytesOut, bytesIn  prometheus.Counter
	dnsOK, dnsRefused  prometheus.Counter
	dnsFailed          prometheus.Counter
	refusedBy          map[string]prometheus.Counter
	refusedConnections prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		links: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sandpool_egress_links",
			Help: "Sandboxes with an egress link attached.",
		}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_egress_connections_total",
			Help: "TCP connections from sandboxes, by outcome (allowed, refused, failed: allowed but the upstream dial failed).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_egress_refusals_total",
			Help: "TCP connections from sandboxes refused, by reason.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_egress_bytes_total",
			Help: "TCP payload bytes relayed for sandboxes, by direction (out: sandbox to upstream, in: upstream to sandbox).",
		}, []string{"direction"}),
		dns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_egress_dns_queries_total",
			Help: "DNS queries from sandboxes, by outcome (answered, refused: the policy does not allow the name, failed).",
		}, []string{"outcome"}),
		attach: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sandpool_egress_attach_seconds",
			Help:    "Time to attach an egress link to a sandbox.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25},
		}),
	}
	m.allowed = m.conns.WithLabelValues("allowed")
	m.refusedConnections = m.conns.WithLabelValues("refused")
	m.failed = m.conns.WithLabelValues("failed")
	m.bytesOut = m.bytes.WithLabelValues("out")
	m.bytesIn = m.bytes.WithLabelValues("in")
	m.dnsOK = m.dns.WithLabelValues("answered")
	m.dnsRefused = m.dns.WithLabelValues("refused")
	m.dnsFailed = m.dns.WithLabelValues("failed")
	m.refusedBy = map[string]prometheus.Counter{}
	for _, r := range []string{reasonBlocked, reasonPolicy, reasonNoName, reasonMismatch, reasonLimit} {
		m.refusedBy[r] = m.refusals.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.links, m.conns, m.refusals, m.bytes, m.dns, m.attach} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
