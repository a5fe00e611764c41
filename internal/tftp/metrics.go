package tftp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a read request: Transfer.Outcome and the outcome label of
// imaged_tftp_transfers_total.
const (
	OutcomeOK              = "ok"
	OutcomeNotFound        = "not_found"
	OutcomeAccessViolation = "access_violation"
	// OutcomeTsizeProbe is UEFI's normal size probe: the client asks for tsize, reads the
	// OACK and aborts, then asks again for the transfer. Not a failure.
	OutcomeTsizeProbe = "aborted_tsize_probe"
	OutcomeBusy       = "busy"        // refused: Config.MaxTransfers already in flight
	OutcomeClientBusy = "client_busy" // refused: Config.MaxPerClient already in flight from that address
	OutcomeError      = "error"
)

var outcomes = []string{OutcomeOK, OutcomeNotFound, OutcomeAccessViolation, OutcomeTsizeProbe, OutcomeBusy, OutcomeClientBusy, OutcomeError}

// Reasons a packet on the listening port started no transfer (label of
// imaged_tftp_requests_ignored_total).
const (
	ignoredMalformed = "malformed"  // not a well-formed RRQ/WRQ (stray DATA/ACK included)
	ignoredDuplicate = "duplicate"  // an RRQ from a client TID already being served
	ignoredWrite     = "write"      // WRQ: this server is read-only
	ignoredMode      = "bad_mode"   // a mode other than octet and netascii
	ignoredSendError = "send_error" // the ERROR answer could not be sent
)

var ignoredReasons = []string{ignoredMalformed, ignoredDuplicate, ignoredWrite, ignoredMode, ignoredSendError}

type metrics struct {
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
	duration  prometheus.Histogram
	inFlight  prometheus.Gauge
	ignored   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_tftp_transfers_total",
			Help: "TFTP read requests by outcome (ok, not_found, access_violation, aborted_tsize_probe, busy, client_busy, error).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imaged_tftp_sent_bytes_total",
			Help: "File bytes sent over TFTP and acknowledged by clients (retransmissions not counted).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imaged_tftp_transfer_duration_seconds",
			Help:    "Duration of successful TFTP transfers, from request to the last ACK.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10), // 10 ms … 38 s
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imaged_tftp_transfers_in_flight",
			Help: "TFTP transfers in progress.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_tftp_requests_ignored_total",
			Help: "Packets on the TFTP port that started no transfer, by reason (write = refused WRQ).",
		}, []string{"reason"}),
	}
	for _, o := range outcomes {
		m.transfers.WithLabelValues(o)
	}
	for _, r := range ignoredReasons {
		m.ignored.WithLabelValues(r)
	}
	return m
}

// collectors are the metrics that register adds and unregister removes.
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.transfers, m.bytes, m.duration, m.inFlight, m.ignored}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("tftp: register metrics: %w", err)
		}
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}
