package dhcp

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	packets *prometheus.CounterVec // by message type and disposition
	replies *prometheus.CounterVec // offers, acks, naks sent
	unknown prometheus.Counter     // packets from MACs not in the Inventory
	handle  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, mode Mode, t *table, now func() time.Time) (*metrics, error) {
	m := &metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_dhcp_packets_total",
			Help: "DHCP packets received, by message type and what was done with them (disposition).",
		}, []string{"type", "disposition"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_dhcp_replies_total",
			Help: "DHCP replies sent, by message type (offer, ack, nak).",
		}, []string{"type"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imaged_dhcp_unknown_client_packets_total",
			Help: "DHCP packets from MACs that are not in the inventory.",
		}),
		handle: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imaged_dhcp_handle_seconds",
			Help:    "Time to handle one DHCP packet, from dequeue to reply sent (lease write included).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2.5, 10), // 25µs .. ~95ms
		}),
	}
	// Every disposition exists from the start, so that rate() and alerts see a zero.
	for _, d := range []string{DispositionMalformed, DispositionOverload} {
		m.packets.WithLabelValues("none", d)
	}
	for _, r := range []string{"offer", "ack", "nak"} {
		m.replies.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.packets, m.replies, m.unknown, m.handle}
	if mode == ModeServer {
		cs = append(cs, &poolCollector{t: t, now: now})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("dhcp: metrics already registered (one Server per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) packet(typ, disposition string) {
	m.packets.WithLabelValues(typ, disposition).Inc()
}

var (
	leasesDesc = prometheus.NewDesc("imaged_dhcp_leases",
		"Addresses held, by state (bound, offered, declined).", []string{"state"}, nil)
	poolFreeDesc = prometheus.NewDesc("imaged_dhcp_pool_free_addresses",
		"Free addresses in the dynamic pool.", nil, nil)
	poolSizeDesc = prometheus.NewDesc("imaged_dhcp_pool_addresses", poolSizeHelp, nil, nil)
)

const poolSizeHelp = "Addresses of the dynamic pool that may be leased (the range without this server's, the router's, the network and broadcast addresses); 0 without a pool."

// poolCollector reads the lease table at scrape time (server mode only: a proxy has no pool).
type poolCollector struct {
	t   *table
	now func() time.Time
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- leasesDesc
	ch <- poolFreeDesc
	ch <- poolSizeDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.stats(c.now())
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(s.bound), LeaseBound)
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(s.offered), stateOffered)
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(s.declined), LeaseDeclined)
	ch <- prometheus.MustNewConstMetric(poolFreeDesc, prometheus.GaugeValue, float64(s.free))
	ch <- prometheus.MustNewConstMetric(poolSizeDesc, prometheus.GaugeValue, float64(s.size))
}
