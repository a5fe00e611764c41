package jobs

import (
	"fmt"
	"time"

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

func newMetrics(reg prometheus.Registerer, mgr *Manager) (*metrics, error) {
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
	// Every kind, outcome and phase exists from the start, so that increase() and alerts see
	// the first failure after a restart (a series born at 1 has no increase).
	for k, phases := range map[Kind][]Phase{KindReimage: reimagePhases, KindReboot: rebootPhases} {
		for _, o := range []State{StateSucceeded, StateFailed, StateCancelled} {
			m.total.WithLabelValues(string(k), string(o))
		}
		for _, p := range phases {
			m.failures.WithLabelValues(string(k), string(p))
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.phase, m.total, m.failures, m.retries, m.current, m.stale, pastDeadline{mgr}} {
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

var pastDeadlineDesc = prometheus.NewDesc("imaged_jobs_past_deadline",
	"Unfinished jobs whose current phase (stopping: the clean-up) has run past its deadline. The manager ends a phase at its "+
		"deadline, so anything but a moment above 0 means it is wedged (a BMC call or store write that does not return).",
	[]string{"phase"}, nil)

// pastDeadline counts, at scrape time, the unfinished jobs whose committed deadline has passed.
// It reads Job.Deadline, the very deadline the manager's phase context carries (absolute, not
// moved by a restart or a change of the configured timeouts), so it counts exactly the jobs the
// manager should already have moved on.
type pastDeadline struct{ m *Manager }

func (c pastDeadline) Describe(ch chan<- *prometheus.Desc) { ch <- pastDeadlineDesc }

func (c pastDeadline) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	n := map[Phase]int{}
	c.m.mu.Lock()
	for _, e := range c.m.jobs {
		if !now.After(e.job.Deadline) {
			continue
		}
		p := e.job.Phase
		if e.job.State == StateStopping {
			p = PhaseStopping
		}
		n[p]++
	}
	c.m.mu.Unlock()
	// Every phase is reported, 0 included, so that a rule can tell "none" from "not scraped".
	for _, p := range append(reimagePhases[:len(reimagePhases):len(reimagePhases)], PhaseStopping) {
		ch <- prometheus.MustNewConstMetric(pastDeadlineDesc, prometheus.GaugeValue, float64(n[p]), string(p))
	}
}
