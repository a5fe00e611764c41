package inventory

import (
	"github.com/prometheus/client_golang/prometheus"
)

var behindChannelDesc = prometheus.NewDesc("imaged_machines_behind_channel",
	"Machines that follow a channel (assigned through name@channel) and were not verified to run the image it points at now: "+
		"a promote or rollback not yet rolled out, or a reimage that has not finished.", nil, nil)

// Collector returns the inventory's metrics, computed at scrape time from the machines and the
// catalog's channels. Register it once.
func (inv *Inventory) Collector() prometheus.Collector { return behindChannel{inv} }

// behindChannel counts the machines whose channel has moved on from what they run. A machine
// assigned a version or a digest follows no channel and is never behind; one whose OS checks in
// with another image than its assigned one is imaged_machines_stale (the jobs' check-ins).
type behindChannel struct{ inv *Inventory }

func (c behindChannel) Describe(ch chan<- *prometheus.Desc) { ch <- behindChannelDesc }

func (c behindChannel) Collect(ch chan<- prometheus.Metric) {
	behind, err := c.inv.BehindChannel()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(behindChannelDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(behindChannelDesc, prometheus.GaugeValue, float64(len(behind)))
}

// BehindChannel is the set of machines (by id) that follow a channel (assigned through
// name@channel) and were not verified to run the image it points at now: a promote or rollback
// not yet rolled out, or a reimage that has not finished. A machine assigned a version or a
// digest follows no channel and is never behind.
func (inv *Inventory) BehindChannel() (map[string]bool, error) {
	digests, err := inv.st.ChannelDigests()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	for _, m := range inv.byID {
		if m.AssignedChannel != "" && m.CurrentImage != digests[m.AssignedChannel] {
			out[m.ID] = true
		}
	}
	return out, nil
}
