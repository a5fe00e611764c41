package jobs

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	phase    *prometheus.HistogramVec
	total    *prometheus.CounterVec
	failures *prometheus.CounterVec
	retries  *prometheus.CounterVec
	current  *prometheus.GaugeVec
	stale    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imaged_job_phase_seconds",
			Help:    "How long each phase of a job took (stopping: the clean-up after a failure or cancel).",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 16), // 0.5 s … 4.5 h
		}, []string{"kind", "phase"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_jobs_total",
			Help: "Jobs finished, by outcome (succeeded, failed, cancelled).",
		}, []string{"kind", "outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_job_failures_total",
			Help: "Failed jobs by the phase that failed.",
		}, []string{"kind", "phase"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_job_retries_total",
			Help: "Retries: step (a failed BMC call or catalog update tried again), power_cycle (a lost netboot or agent).",
		}, []string{"kind", "what"}),
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imaged_jobs_current",
			Help: "Unfinished jobs: queued, or active (running or stopping).",
		}, []string{"state"}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imaged_machines_stale",
			Help: "Machines whose booted OS last checked in with another image than the one they are assigned.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.phase, m.total, m.failures, m.retries, m.current, m.stale} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("jobs: metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Manager) updateGaugesLocked() {
	var queued, active, stale int
	for _, e := range m.jobs {
		if e.job.State == StateQueued {
			queued++
		} else {
			active++
		}
	}
	for _, c := range m.checkIns {
		if c.Stale {
			stale++
		}
	}
	m.met.current.WithLabelValues("queued").Set(float64(queued))
	m.met.current.WithLabelValues("active").Set(float64(active))
	m.met.stale.Set(float64(stale))
}
