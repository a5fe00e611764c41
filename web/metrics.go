package web

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dashboard's: what its doors refused, its sessions and its event streams.
type metrics struct {
	refused  *prometheus.CounterVec
	sessions prometheus.Gauge
	updates  prometheus.Counter
	dropped  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_web_refused_total",
			Help: "Dashboard requests refused, by reason (bad_token, no_session, expired, csrf, scope, origin, sessions_full).",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imaged_web_sessions",
			Help: "Dashboard sessions open.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imaged_web_updates_total",
			Help: "Live updates sent to dashboards (one per page per message; a machine's progress at most once a second).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imaged_web_streams_dropped_total",
			Help: "Dashboard event streams cut because the browser did not take its updates in time (it reconnects and gets the page whole).",
		}),
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		if err := errors.Join(reg.Register(m.refused), reg.Register(m.sessions), reg.Register(m.updates), reg.Register(m.dropped)); err != nil {
			return nil, fmt.Errorf("web: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) refuse(reason string) { m.refused.WithLabelValues(reason).Inc() }
