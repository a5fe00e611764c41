package web

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/imaged/imaged/internal/jobs"
)

// statusData is the status page: the doors' counters, the BMCs' breakers and the job queue.
type statusData struct {
	Sections []counterSection
	BMCs     []bmcRow
	Queue    []jobs.Job
	NoJobs   bool
	Now      time.Time
}

// counterSection is the counters of one door, as /metrics has them.
type counterSection struct {
	Title string
	Rows  []counterRow
}

type counterRow struct {
	Metric string
	Labels string // name="value", …
	Value  float64
	Help   string
}

// sections are the status page's doors and the metrics' prefixes that are theirs.
var sections = []struct{ title, prefix string }{
	{"DHCP", "imaged_dhcp_"},
	{"TFTP", "imaged_tftp_"},
	{"HTTP", "imaged_http_"},
	{"Boot scripts and assets", "imaged_boot_"},
	{"Agents", "imaged_agent_"},
	{"Dashboard", "imaged_web_"},
}

type bmcRow struct {
	Name      string
	Degraded  bool
	Failures  int
	LastError string
	Since     time.Time
}

// counters reads the counters and gauges of the sections from the daemon's registry: the very
// numbers /metrics serves.
func (s *Server) counters() []counterSection {
	if s.d.Gatherer == nil {
		return nil
	}
	mfs, err := s.d.Gatherer.Gather()
	if err != nil {
		s.log.Warn("web: gather metrics", "err", err)
	}
	out := make([]counterSection, len(sections))
	for i, sec := range sections {
		out[i].Title = sec.title
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), sec.prefix) {
				continue
			}
			for _, m := range mf.GetMetric() {
				var v float64
				switch mf.GetType() {
				case dto.MetricType_COUNTER:
					v = m.GetCounter().GetValue()
				case dto.MetricType_GAUGE:
					v = m.GetGauge().GetValue()
				case dto.MetricType_HISTOGRAM:
					v = float64(m.GetHistogram().GetSampleCount())
				default:
					continue
				}
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				name := mf.GetName()
				if mf.GetType() == dto.MetricType_HISTOGRAM {
					name += "_count"
				}
				out[i].Rows = append(out[i].Rows, counterRow{Metric: name, Labels: strings.Join(labels, ", "), Value: v, Help: mf.GetHelp()})
			}
		}
		slices.SortFunc(out[i].Rows, func(a, b counterRow) int {
			return cmp.Or(strings.Compare(a.Metric, b.Metric), strings.Compare(a.Labels, b.Labels))
		})
	}
	return out
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request, v viewer) {
	d := statusData{Sections: s.counters(), NoJobs: s.d.Jobs == nil, Now: time.Now()}
	if s.d.BMCs != nil {
		for _, n := range s.d.BMCs.Names() {
			h, _ := s.d.BMCs.Health(n)
			d.BMCs = append(d.BMCs, bmcRow{Name: n, Degraded: h.Degraded, Failures: h.Failures, LastError: h.LastError, Since: h.Since})
		}
	}
	if s.d.Jobs != nil {
		for _, j := range s.d.Jobs.List(jobs.Filter{Active: true}) {
			if j.State == jobs.StateQueued {
				d.Queue = append(d.Queue, j)
			}
		}
		slices.SortFunc(d.Queue, func(a, b jobs.Job) int { return strings.Compare(a.ID, b.ID) })
	}
	s.render(w, r, http.StatusOK, "status", page{Title: "Status", Nav: "status", Viewer: v, Data: d})
}
