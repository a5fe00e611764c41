package jobs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Admission. A reimage holds a slot of its chassis (PerChassis) from fencing until it ends, and
// a slot of the link (LinkBytesPerSecond/MinBytesPerSecond) from fencing until its write is
// verified. Queued jobs are admitted oldest first; one that waits for its chassis does not hold
// up the jobs of other chassis. A reboot moves no image and is admitted at once.

// admit starts every queued job that has a slot, fails those whose queue deadline passed, and
// returns when it should look again.
func (m *Manager) admit(ctx context.Context, start func(*entry)) time.Time {
	now := time.Now()
	next := now.Add(time.Minute)
	m.mu.Lock()
	var queued []*entry
	chassis, link := map[string]int{}, 0
	for _, e := range m.jobs {
		j := &e.job
		switch {
		case j.State == StateQueued:
			queued = append(queued, e)
		case j.Kind == KindReimage:
			chassis[j.Chassis]++
			if j.State == StateRunning && j.Phase.usesLink() {
				link++
			}
		}
	}
	slices.SortFunc(queued, func(a, b *entry) int { return strings.Compare(a.job.ID, b.job.ID) })
	var admit, expire []*entry
	for _, e := range queued {
		j := &e.job
		switch {
		case !now.Before(j.Deadline):
			expire = append(expire, e)
		case j.Kind == KindReboot:
			admit = append(admit, e)
		case chassis[j.Chassis] < m.cfg.PerChassis && link < m.cfg.linkSlots():
			chassis[j.Chassis]++
			link++
			admit = append(admit, e)
		default:
			if j.Deadline.Before(next) {
				next = j.Deadline
			}
		}
	}
	m.mu.Unlock()
	for _, e := range expire {
		_, err := m.update(e, func(j *Job) error {
			if j.State != StateQueued {
				return errNoChange
			}
			now := time.Now().UTC()
			j.closePhase(now)
			j.State = StateFailed
			j.Reason = fmt.Sprintf("waited in the queue for %s without a slot (%d per chassis, %d on the link)",
				m.cfg.Timeouts[PhaseQueued], m.cfg.PerChassis, m.cfg.linkSlots())
			j.note(now, m.cfg.MaxTimeline, "failed in queued: %s", j.Reason)
			return nil
		})
		if err != nil {
			m.log.Error("cannot fail an expired queued job", "job", e.job.ID, "err", err)
			next = now.Add(5 * time.Second)
		}
	}
	for _, e := range admit {
		if ctx.Err() != nil {
			break
		}
		j, err := m.update(e, func(j *Job) error {
			if j.State != StateQueued {
				return errNoChange
			}
			now := time.Now().UTC()
			first := PhaseFencing
			if j.Kind == KindReboot {
				first = PhaseRebooting
			}
			j.State = StateRunning
			j.note(now, m.cfg.MaxTimeline, "admitted after %s in the queue", now.Sub(j.Created).Round(time.Second))
			m.enter(j, first, now)
			return nil
		})
		if err != nil {
			m.log.Error("cannot admit a job", "job", e.job.ID, "err", err)
			next = now.Add(5 * time.Second)
			continue
		}
		if j.State == StateRunning {
			start(e)
		}
	}
	return next
}

// estimateLocked computes the place and estimated start and end of every queued job: the
// running jobs free their slots when their remaining work is done (from their progress when they
// write), then the queue is laid onto the slots in order. A write is expected to get an equal
// share of the link among the jobs that use it at once.
func (m *Manager) estimateLocked(now time.Time) map[string]Queue {
	var running, queued []*entry
	users := 0
	for _, e := range m.jobs {
		switch j := &e.job; {
		case j.State == StateQueued:
			queued = append(queued, e)
			if j.Kind == KindReimage {
				users++
			}
		case j.Kind == KindReimage:
			running = append(running, e)
			if j.State == StateRunning && j.Phase.usesLink() {
				users++
			}
		}
	}
	if len(queued) == 0 {
		return nil
	}
	byID := func(a, b *entry) int { return strings.Compare(a.job.ID, b.job.ID) }
	slices.SortFunc(running, byID)
	slices.SortFunc(queued, byID)
	share := float64(m.cfg.LinkBytesPerSecond) / float64(max(1, min(m.cfg.linkSlots(), users)))
	transfer := func(bytes int64, rate float64) time.Duration {
		return time.Duration(float64(bytes) / rate * float64(time.Second))
	}

	chassis := map[string][]time.Time{}
	link := make([]time.Time, m.cfg.linkSlots())
	for i := range link {
		link[i] = now
	}
	slot := func(ch string) []time.Time {
		if chassis[ch] == nil {
			s := make([]time.Time, m.cfg.PerChassis)
			for i := range s {
				s[i] = now
			}
			chassis[ch] = s
		}
		return chassis[ch]
	}
	earliest := func(s []time.Time) int {
		k := 0
		for i := range s {
			if s[i].Before(s[k]) {
				k = i
			}
		}
		return k
	}
	take := func(s []time.Time, until time.Time) {
		if k := earliest(s); until.After(s[k]) {
			s[k] = until
		}
	}
	for _, e := range running {
		j := &e.job
		linkLeft, bootLeft := m.remainingLocked(e, now, share)
		take(slot(j.Chassis), now.Add(linkLeft+bootLeft))
		if j.State == StateRunning && j.Phase.usesLink() {
			take(link, now.Add(linkLeft))
		}
	}
	out := make(map[string]Queue, len(queued))
	for i, e := range queued {
		j := &e.job
		if j.Kind == KindReboot {
			out[j.ID] = Queue{Position: i + 1, Start: now, Done: now.Add(m.cfg.ExpectBoot)}
			continue
		}
		netLink := m.cfg.ExpectNetboot + transfer(dataBytes(j), share)
		cs := slot(j.Chassis)
		ci, li := earliest(cs), earliest(link)
		start := now
		for _, t := range []time.Time{cs[ci], link[li]} {
			if t.After(start) {
				start = t
			}
		}
		done := start.Add(netLink + m.cfg.ExpectBoot)
		cs[ci], link[li] = done, start.Add(netLink)
		out[j.ID] = Queue{Position: i + 1, Start: start, Done: done}
	}
	return out
}

func dataBytes(j *Job) int64 {
	if j.Image == nil {
		return 0
	}
	if j.Image.DataBytes > 0 {
		return j.Image.DataBytes
	}
	return j.Image.Size
}

// remainingLocked estimates how long a running reimage still uses the link, and then how long
// it holds its chassis slot after that (the boot).
func (m *Manager) remainingLocked(e *entry, now time.Time, share float64) (link, boot time.Duration) {
	j := &e.job
	since := func(p Phase) time.Duration {
		if t := j.phaseStart(p); !t.IsZero() {
			return now.Sub(t)
		}
		return 0
	}
	left := dataBytes(j)
	rate := share
	switch j.Phase {
	case PhaseFencing, PhaseBootSet, PhasePoweringOn, PhaseNetbooting:
		net := max(0, m.cfg.ExpectNetboot-since(PhaseFencing))
		return net + time.Duration(float64(left)/rate*float64(time.Second)), m.cfg.ExpectBoot
	case PhaseWriting:
		p := j.Progress
		if lp, ok := e.box.liveProgress(); ok && (p == nil || lp.Time.After(p.Time)) {
			p = &lp
		}
		if p != nil && p.BytesTotal > 0 {
			left = p.BytesTotal - p.BytesDone
			if p.RateBytes > 0 {
				rate = p.RateBytes
			}
		}
		return time.Duration(float64(left) / rate * float64(time.Second)), m.cfg.ExpectBoot
	case PhaseVerifying:
		return 0, m.cfg.ExpectBoot
	case PhaseRebooting, PhaseBootingOS, PhaseReady:
		return 0, max(0, m.cfg.ExpectBoot-since(PhaseRebooting))
	}
	return 0, 0
}
