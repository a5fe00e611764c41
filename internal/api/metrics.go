package api

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	results *prometheus.CounterVec
}

// Outcomes of agent results: the write verified and proven; the agent reported a failed write;
// the server refused the result (it disagrees with the manifest, or its proof of possession
// failed).
var resultOutcomes = []string{"accepted", "failed", "refused"}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	m := &metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_agent_results_total",
			Help: "Agent results by outcome: accepted (verified and proven), failed (the agent reported a failed write), refused (the server refused the result: counts or proof of possession).",
		}, []string{"outcome"}),
	}
	for _, o := range resultOutcomes {
		m.results.WithLabelValues(o)
	}
	if reg != nil {
		if err := reg.Register(m.results); err != nil && log != nil {
			log.Error("api: cannot register metrics", "err", err)
		}
	}
	return m
}
