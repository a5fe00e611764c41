package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// The phases. Each one starts from the last committed state and acts idempotently, so that a
// restarted daemon can run it again: power steps read the state first, the catalog updates set
// values, the waits look at the machine record before they wait.

func (m *Manager) fencing(ctx context.Context, e *entry, j Job) verdict {
	if err := m.try(ctx, e, "power off", func(ctx context.Context) error { return m.setPower(ctx, j.Machine, power.Off) }); err != nil {
		return m.stepFailed(ctx, j, err)
	}
	return verdict{next: PhaseBootSet, msg: "machine is off (read back)"}
}

func (m *Manager) bootSet(ctx context.Context, e *entry, j Job) verdict {
	if err := m.try(ctx, e, "set the next boot to the network", func(ctx context.Context) error {
		return m.d.Power.BootOnce(ctx, j.Machine, power.Pxe, "")
	}); err != nil {
		return m.stepFailed(ctx, j, err)
	}
	return verdict{next: PhasePoweringOn, msg: "next boot: network, once"}
}

// poweringOn records the assignment before the machine can run an agent: the current image is
// forgotten first (the disk is about to be overwritten), then the job's image is assigned (the
// agent's plan), then the machine is powered on.
func (m *Manager) poweringOn(ctx context.Context, e *entry, j Job) verdict {
	if err := m.try(ctx, e, "record the assignment", func(context.Context) error {
		if err := m.d.Catalog.ClearCurrentImage(j.Machine); err != nil {
			return err
		}
		_, err := m.d.Catalog.Assign(j.Machine, *j.Image, j.By)
		return err
	}); err != nil {
		return m.stepFailed(ctx, j, err)
	}
	e.box.reset() // what the machine does from now on belongs to this boot
	if err := m.try(ctx, e, "power on", func(ctx context.Context) error { return m.setPower(ctx, j.Machine, power.On) }); err != nil {
		return m.stepFailed(ctx, j, err)
	}
	return verdict{next: PhaseNetbooting, msg: "machine is on (read back); waiting for it to netboot",
		change: func(j *Job) { j.Netboot, j.Progress, j.Result = &Netboot{}, nil, nil }}
}

// verifiedInRecord reports whether the machine record shows the job's image as current: only
// the server's check of the agent's result sets it (inventory.RecordResult), and the job
// cleared it before the machine was powered on.
func (m *Manager) verifiedInRecord(j Job) bool {
	mach, ok := m.d.Catalog.Machine(j.Machine)
	return ok && !j.digest().IsZero() && mach.CurrentImage == j.digest()
}

var verifiedWhileAway = &Result{Verified: true, Reason: "the machine record shows the image verified by the server"}

func toVerifying(res Result, msg string) verdict {
	return verdict{next: PhaseVerifying, msg: msg, change: func(j *Job) { r := res; j.Result = &r }}
}

func (m *Manager) netbooting(ctx context.Context, e *entry, j Job) verdict {
	for {
		s := e.box.snapshot()
		if s.result == nil && m.verifiedInRecord(j) {
			r := *verifiedWhileAway
			r.Time = time.Now().UTC()
			return toVerifying(r, r.Reason)
		}
		var err error
		if j, err = m.commit(ctx, e, func(j *Job) error { return m.noteNetboot(j, s) }); err != nil {
			return verdict{wait: true}
		}
		switch {
		case s.result != nil:
			return toVerifying(*s.result, "the agent reported its result")
		case !s.hello.IsZero() || s.progress != nil:
			return verdict{next: PhaseWriting, msg: "the agent runs on the machine; waiting for it to write"}
		}
		if err := e.box.wait(ctx, time.Hour); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return verdict{cycle: m.netbootReason(j)}
			}
			return verdict{wait: true}
		}
	}
}

// noteNetboot records the netboot sub-steps seen so far.
func (m *Manager) noteNetboot(j *Job, s signals) error {
	if j.Netboot == nil {
		j.Netboot = &Netboot{}
	}
	nb, changed := j.Netboot, false
	for _, x := range []struct {
		seen time.Time
		rec  *time.Time
		msg  string
	}{
		{s.dhcp, &nb.DHCP, "DHCP request from the machine"},
		{s.script, &nb.Script, "iPXE script fetched"},
		{s.hello, &nb.Hello, "agent hello"},
	} {
		if !x.seen.IsZero() && x.rec.IsZero() {
			*x.rec, changed = x.seen, true
			j.note(x.seen, m.cfg.MaxTimeline, "%s", x.msg)
		}
	}
	if !changed {
		return errNoChange
	}
	return nil
}

func (m *Manager) netbootReason(j Job) string {
	t := m.cfg.Timeouts[PhaseNetbooting]
	if c, _, ok := m.checkInSince(j, j.phaseStart(PhasePoweringOn)); ok {
		// The installed OS runs although the machine was read back off and netbooted: the BMC
		// reports a power state it did not reach.
		return fmt.Sprintf("the machine did not netboot within %s, and its installed OS checked in at %s although the BMC had reported it off: the BMC does not control its power",
			t, c.Time.Format(time.RFC3339))
	}
	nb := j.Netboot
	switch {
	case nb == nil || nb.DHCP.IsZero() && nb.Script.IsZero() && nb.Hello.IsZero():
		return fmt.Sprintf("the machine did not netboot within %s: no DHCP request, no agent (check its boot override, its NIC's PXE setting and its MACs in the inventory)", t)
	case nb.Script.IsZero() && nb.Hello.IsZero():
		return fmt.Sprintf("DHCP request seen at %s but no iPXE script fetched within %s", nb.DHCP.Format(time.RFC3339), t)
	default:
		return fmt.Sprintf("the agent did not say hello within %s of power on", t)
	}
}

// progressCommitEvery is how often the agent's progress (sent every second) is stored.
const progressCommitEvery = 15 * time.Second

func (m *Manager) writing(ctx context.Context, e *entry, j Job) verdict {
	// The agent must report within AgentSilence of the phase starting here (a restart gives a
	// reconnecting agent a full window) and of each report.
	silent := time.Now().Add(m.cfg.AgentSilence)
	last := j.Progress // the latest report seen
	var stored time.Time
	if last != nil {
		stored = last.Time
	}
	end := func(v verdict) verdict { // the transition stores the latest report too
		p, change := last, v.change
		v.change = func(j *Job) {
			if p != nil {
				j.Progress = p
			}
			if change != nil {
				change(j)
			}
		}
		return v
	}
	for {
		s := e.box.snapshot()
		if s.result != nil {
			return end(toVerifying(*s.result, "the agent reported its result"))
		}
		if m.verifiedInRecord(j) {
			r := *verifiedWhileAway
			r.Time = time.Now().UTC()
			return end(toVerifying(r, r.Reason))
		}
		if p := s.progress; p != nil && (last == nil || p.Time.After(last.Time)) {
			last = p
			if t := p.Time.Add(m.cfg.AgentSilence); t.After(silent) {
				silent = t
			}
			if p.Time.Sub(stored) >= progressCommitEvery {
				first := j.Progress == nil
				var err error
				j, err = m.commit(ctx, e, func(j *Job) error {
					j.Progress = p
					if first {
						j.note(p.Time, m.cfg.MaxTimeline, "the agent is writing (%d bytes)", p.BytesTotal)
					}
					return nil
				})
				if err != nil {
					return verdict{wait: true}
				}
				stored = p.Time
			}
		}
		if !time.Now().Before(silent) {
			return end(verdict{cycle: fmt.Sprintf("the agent went silent: no progress for %s%s", m.cfg.AgentSilence, progressText(last))})
		}
		if err := e.box.wait(ctx, time.Until(silent)); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return end(verdict{fail: fmt.Sprintf("the write did not finish within %s%s", m.cfg.Timeouts[PhaseWriting], progressText(last))})
			}
			return verdict{wait: true}
		}
	}
}

func progressText(p *Progress) string {
	if p == nil || p.BytesTotal == 0 {
		return ""
	}
	return fmt.Sprintf(" (last report: %d of %d bytes, %.0f%%, at %s)", p.BytesDone, p.BytesTotal,
		100*float64(p.BytesDone)/float64(p.BytesTotal), p.Time.Format(time.RFC3339))
}

// verifying decides from the machine record alone, so that it needs no signal and gives the
// same answer after a restart: the image is verified when inventory.RecordResult made it the
// machine's current image.
func (m *Manager) verifying(_ context.Context, _ *entry, j Job) verdict {
	if m.verifiedInRecord(j) {
		return verdict{next: PhaseRebooting, msg: fmt.Sprintf("the server verified the write of %s", j.digest())}
	}
	reason := "the agent's result was not accepted: the machine record does not show " + j.digest().String()
	switch {
	case j.Result != nil && !j.Result.Verified && j.Result.Reason != "":
		reason = "the write was not verified: " + j.Result.Reason
	case j.Result != nil && j.Result.Verified:
		reason = "the agent's result was reported verified, but the machine record does not show " + j.digest().String()
	}
	return verdict{fail: reason}
}

// Sub-steps of rebooting.
const (
	stepOff  = "off"
	stepBoot = "boot"
	stepOn   = "on"
)

// rebooting powers the machine off (read back), sets the next boot to the disk (a reimage) and
// powers it on (read back). Each sub-step is committed before it is done, so a restart redoes
// at most the one it was in; every one of them is idempotent.
func (m *Manager) rebooting(ctx context.Context, e *entry, j Job) verdict {
	for {
		switch j.Step {
		case "", stepOff:
			if err := m.try(ctx, e, "power off", func(ctx context.Context) error { return m.setPower(ctx, j.Machine, power.Off) }); err != nil {
				return m.stepFailed(ctx, j, err)
			}
			next := stepBoot
			if j.Kind == KindReboot {
				next = stepOn // boot as the machine is configured to
			}
			var err error
			if j, err = m.commit(ctx, e, func(j *Job) error {
				now := time.Now().UTC()
				j.Step, j.Attempts, j.OffAt = next, 0, now
				j.note(now, m.cfg.MaxTimeline, "machine is off (read back)")
				return nil
			}); err != nil {
				return verdict{wait: true}
			}
			e.box.reset()
		case stepBoot:
			if err := m.try(ctx, e, "set the next boot to the disk", func(ctx context.Context) error {
				return m.d.Power.BootOnce(ctx, j.Machine, power.Disk, "")
			}); err != nil {
				return m.stepFailed(ctx, j, err)
			}
			var err error
			if j, err = m.commit(ctx, e, func(j *Job) error {
				j.Step, j.Attempts = stepOn, 0
				j.note(time.Now().UTC(), m.cfg.MaxTimeline, "next boot: disk, once")
				return nil
			}); err != nil {
				return verdict{wait: true}
			}
		case stepOn:
			if err := m.try(ctx, e, "power on", func(ctx context.Context) error { return m.setPower(ctx, j.Machine, power.On) }); err != nil {
				return m.stepFailed(ctx, j, err)
			}
			return verdict{next: PhaseBootingOS, msg: "machine is on (read back); waiting for the OS to be ready (" + j.Probe.String() + ")"}
		default:
			return verdict{fail: fmt.Sprintf("unknown rebooting step %q", j.Step)}
		}
	}
}

// checkInSince returns the machine's latest check-in if it came at or after t, and whether it
// is for another image than the job's (a stale machine).
func (m *Manager) checkInSince(j Job, t time.Time) (c machines.CheckIn, wrong, ok bool) {
	m.mu.Lock()
	c, ok = m.checkIns[j.Machine]
	m.mu.Unlock()
	if !ok || c.Time.Before(t) {
		return c, false, false
	}
	want := j.digest()
	if want.IsZero() {
		want = c.Expected
	}
	return c, !want.IsZero() && c.Digest != want, true
}

func staleReason(j Job, c machines.CheckIn) string {
	want := j.digest()
	if want.IsZero() {
		want = c.Expected
	}
	return fmt.Sprintf("the booted OS checked in with %s, not %s: the machine is stale", c.Digest, want)
}

// bootingOS waits until the booted machine is ready: its probe passes and, when the probe asks
// for it (or there is no network probe), its OS checked in with the right digest. A check-in
// with another digest fails the job at once. Check-ins are stored, so one that came before a
// restart still counts; they count when they came after the machine was read back off.
func (m *Manager) bootingOS(ctx context.Context, e *entry, j Job) verdict {
	since := j.OffAt
	if since.IsZero() {
		since = j.phaseStart(PhaseBootingOS)
	}
	var probed, checkedIn, hello time.Time
	var probeErr error
	tries := 0
	for {
		if s := e.box.snapshot(); !s.hello.IsZero() && hello.IsZero() {
			// The mailbox was emptied when the machine was read back off: this boot went to the
			// agent, not to the disk. Said on the timeline and in the reason if it times out
			// (a failure at once could be fooled by a request that was in flight at power off).
			hello = s.hello
			var err error
			if j, err = m.commit(ctx, e, func(j *Job) error {
				j.note(hello, m.cfg.MaxTimeline, "the agent said hello: the machine netbooted instead of booting its disk")
				return nil
			}); err != nil {
				return verdict{wait: true}
			}
		}
		if c, wrong, ok := m.checkInSince(j, since); ok {
			if wrong {
				return verdict{fail: staleReason(j, c)}
			}
			checkedIn = c.Time
		}
		if j.Probe.Kind != "" && probed.IsZero() {
			mach, _ := m.d.Catalog.Machine(j.Machine)
			pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
			probeErr = m.d.Prober.Probe(pctx, mach, j.Probe)
			cancel()
			tries++
			if probeErr == nil {
				probed = time.Now().UTC()
			}
		}
		if (j.Probe.Kind == "" || !probed.IsZero()) && (!j.Probe.needsCheckIn() || !checkedIn.IsZero()) {
			rd := Ready{Probed: probed, CheckedIn: checkedIn}
			msg := "the machine is ready:"
			if !probed.IsZero() {
				msg += " probe " + j.Probe.String() + " passed"
			}
			if !checkedIn.IsZero() {
				msg += " the OS checked in with its image"
			}
			return verdict{next: PhaseReady, msg: msg, change: func(j *Job) { j.Ready = &rd }}
		}
		if err := e.box.wait(ctx, m.cfg.ProbeInterval); err != nil {
			reason := fmt.Sprintf("the machine was not ready within %s:", m.cfg.Timeouts[PhaseBootingOS])
			if j.Probe.Kind != "" && probed.IsZero() {
				reason += fmt.Sprintf(" probe %s failed %d times (last: %v);", j.Probe, tries, probeErr)
			}
			if j.Probe.needsCheckIn() && checkedIn.IsZero() {
				reason += " the OS did not check in;"
			}
			if !hello.IsZero() {
				reason += " the machine netbooted the agent instead of booting its disk (check its boot order and the disk override);"
			}
			return m.timedOut(ctx, j, reason[:len(reason)-1], nil)
		}
	}
}

// ready makes sure nothing changed the machine's record under the job, then succeeds.
func (m *Manager) ready(_ context.Context, _ *entry, j Job) verdict {
	since := j.OffAt
	if since.IsZero() {
		since = j.phaseStart(PhaseBootingOS)
	}
	if c, wrong, ok := m.checkInSince(j, since); ok && wrong {
		return verdict{fail: staleReason(j, c)}
	}
	if j.Kind == KindReimage {
		mach, ok := m.d.Catalog.Machine(j.Machine)
		switch {
		case !ok:
			return verdict{fail: "the machine left the inventory"}
		case mach.CurrentImage != j.digest():
			return verdict{fail: fmt.Sprintf("the machine record no longer shows %s as its image (it shows %q)", j.digest(), mach.CurrentImage)}
		case mach.AssignedImage != j.digest():
			return verdict{fail: fmt.Sprintf("the machine was assigned %s during the job", mach.AssignedImage)}
		}
	}
	return verdict{done: true}
}
