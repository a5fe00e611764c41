package redfish

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/internal/power"
)

// Outcomes of an operation: the outcome label of imaged_bmc_requests_total.
const (
	OutcomeOK          = "ok"
	OutcomeClientError = "client_error" // a 4xx about our request (not auth)
	OutcomeAuth        = "auth"         // credentials refused
	OutcomeServerError = "server_error" // 5xx after the retries
	OutcomeUnreachable = "unreachable"  // transport error or TLS failure after the retries
	OutcomeTimeout     = "timeout"      // no answer within Config.Timeout after the retries
	OutcomeMalformed   = "malformed"    // an answer we could not decode
	OutcomeDegraded    = "degraded"     // not attempted: circuit breaker open
	OutcomeCanceled    = "canceled"     // the caller gave up
)

var outcomes = []string{OutcomeOK, OutcomeClientError, OutcomeAuth, OutcomeServerError,
	OutcomeUnreachable, OutcomeTimeout, OutcomeMalformed, OutcomeDegraded, OutcomeCanceled}

// Metrics are the BMC clients' Prometheus metrics. Create one per registry and share it
// between the Clients of all BMCs; each Client labels its series with Config.Name.
type Metrics struct {
	requests *prometheus.CounterVec
	retries  *prometheus.CounterVec
	degraded *prometheus.GaugeVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the metrics on reg (never the global registry unless you pass it).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_bmc_requests_total",
			Help: "Redfish operations by BMC and outcome (ok, client_error, auth, server_error, unreachable, timeout, malformed, degraded, canceled); retries of one operation count once.",
		}, []string{"bmc", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_bmc_retries_total",
			Help: "HTTP requests to a BMC that were tried again after a transport error or 5xx.",
		}, []string{"bmc"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imaged_bmc_degraded",
			Help: "1 while the BMC's circuit breaker is open (calls fail fast), else 0.",
		}, []string{"bmc"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imaged_bmc_request_duration_seconds",
			Help:    "Duration of Redfish operations, retries and login included.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10), // 10 ms … 38 s
		}, []string{"bmc"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.retries, m.degraded, m.duration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("redfish: metrics already registered (one Metrics per registry, shared by all Clients)")
			}
			return nil, err
		}
	}
	return m, nil
}

// bmcMetrics are one BMC's series; nil-safe so a Client without Metrics needs no checks.
type bmcMetrics struct {
	requests map[string]prometheus.Counter
	retries  prometheus.Counter
	degraded prometheus.Gauge
	duration prometheus.Observer
}

func (m *Metrics) forBMC(name string) *bmcMetrics {
	if m == nil {
		return nil
	}
	b := &bmcMetrics{
		requests: make(map[string]prometheus.Counter, len(outcomes)),
		retries:  m.retries.WithLabelValues(name),
		degraded: m.degraded.WithLabelValues(name),
		duration: m.duration.WithLabelValues(name),
	}
	// Every outcome exists from the start, so that rate() and alerts see a zero.
	for _, o := range outcomes {
		b.requests[o] = m.requests.WithLabelValues(name, o)
	}
	b.degraded.Set(0)
	return b
}

func (b *bmcMetrics) request(outcome string, seconds float64) {
	if b == nil {
		return
	}
	b.requests[outcome].Inc()
	if outcome != OutcomeDegraded {
		b.duration.Observe(seconds)
	}
}

func (b *bmcMetrics) retry() {
	if b != nil {
		b.retries.Inc()
	}
}

func (b *bmcMetrics) setDegraded(d bool) {
	if b == nil {
		return
	}
	if d {
		b.degraded.Set(1)
	} else {
		b.degraded.Set(0)
	}
}

// outcomeOf maps an operation's error onto its outcome label.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, power.ErrDegraded):
		return OutcomeDegraded
	case errors.Is(err, power.ErrAuth):
		return OutcomeAuth
	case errors.Is(err, power.ErrTimeout):
		return OutcomeTimeout
	case errors.Is(err, power.ErrUnreachable):
		return OutcomeUnreachable
	case errors.Is(err, power.ErrUnavailable):
		return OutcomeServerError
	case errors.Is(err, power.ErrMalformed):
		return OutcomeMalformed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	}
	return OutcomeClientError
}
