package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// verdict is how a phase ended.
type verdict struct {
	next   Phase      // the phase to enter
	done   bool       // the job succeeded
	fail   string     // the job fails in this phase, for this reason
	cycle  string     // the netboot or the agent was lost: power-cycle, or fail when out of cycles
	msg    string     // timeline line for the transition
	change func(*Job) // more changes committed with the transition
	wait   bool       // interrupted (cancel or shutdown): no transition
}

// drive moves one job through its phases until it finishes or ctx ends. Each iteration acts on
// the last committed state only, so that it does exactly what a restarted daemon would do.
func (m *Manager) drive(ctx context.Context, e *entry) {
	log := m.log.With("job", m.current(e).ID, "machine", m.current(e).Machine)
	for ctx.Err() == nil {
		j := m.current(e)
		switch {
		case j.State.Done():
			return
		case j.State == StateStopping:
			m.stopping(ctx, e, j)
			continue
		case j.Cancel != nil:
			m.beginStop(ctx, e, StateCancelled, "cancelled by "+j.Cancel.By, nil)
			continue
		}
		pctx, cancel := context.WithDeadline(ctx, j.Deadline)
		m.mu.Lock()
		e.stop = cancel
		cancelled := e.job.Cancel != nil
		m.mu.Unlock()
		if cancelled {
			cancel()
		}
		v := m.phase(pctx, e, j)
		cancel()
		m.mu.Lock()
		e.stop = nil
		m.mu.Unlock()
		if ctx.Err() != nil || m.current(e).Cancel != nil {
			continue
		}
		if v.wait { // not expected without a cancel or a shutdown; do not spin
			_ = sleep(ctx, time.Second)
			continue
		}
		log.Debug("phase ended", "phase", j.Phase, "next", v.next, "fail", v.fail, "cycle", v.cycle)
		m.apply(ctx, e, v)
	}
}

// phaseRun is the method that runs each phase (phases.go): it acts, waits, and says how the
// phase ended.
var phaseRun = map[Phase]func(m *Manager, ctx context.Context, e *entry, j Job) verdict{
	PhaseFencing:    (*Manager).fencing,
	PhaseBootSet:    (*Manager).bootSet,
	PhasePoweringOn: (*Manager).poweringOn,
	PhaseNetbooting: (*Manager).netbooting,
	PhaseWriting:    (*Manager).writing,
	PhaseVerifying:  (*Manager).verifying,
	PhaseRebooting:  (*Manager).rebooting,
	PhaseBootingOS:  (*Manager).bootingOS,
	PhaseReady:      (*Manager).ready,
}

// phase runs the current phase of j. ctx carries the phase's deadline.
func (m *Manager) phase(ctx context.Context, e *entry, j Job) verdict {
	if run, ok := phaseRun[j.Phase]; ok {
		return run(m, ctx, e, j)
	}
	return verdict{fail: fmt.Sprintf("a %s job cannot be in phase %q (a record from another version of imaged?)", j.Kind, j.Phase)}
}

// timedOut turns the end of a phase's context into a verdict: the deadline is a failure with
// reason, anything else (a cancel, a shutdown) is not a transition.
func (m *Manager) timedOut(ctx context.Context, j Job, reason string, err error) verdict {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return verdict{wait: true}
	}
	if reason == "" {
		reason = fmt.Sprintf("%s did not finish within %s", j.Phase, m.cfg.Timeouts[j.Phase])
	}
	if err != nil {
		reason += ": " + err.Error()
	}
	return verdict{fail: reason}
}

// stepFailed is the verdict of a step that failed: out of retries, or out of time.
func (m *Manager) stepFailed(ctx context.Context, j Job, err error) verdict {
	if ctx.Err() != nil {
		return m.timedOut(ctx, j, "", err)
	}
	return verdict{fail: err.Error()}
}

// enter moves j into phase p, with p's deadline from now.
func (m *Manager) enter(j *Job, p Phase, now time.Time) {
	j.closePhase(now)
	j.Phase, j.Step, j.Attempts = p, "", 0
	j.Deadline = now.Add(m.cfg.Timeouts[p])
	j.openPhase(p, now)
}

// apply commits the transition a phase asked for.
func (m *Manager) apply(ctx context.Context, e *entry, v verdict) {
	switch {
	case v.fail != "":
		m.beginStop(ctx, e, StateFailed, v.fail, v.change)
		return
	case v.cycle != "":
		j := m.current(e)
		if j.Cycles >= m.cfg.Cycles {
			reason := v.cycle
			if m.cfg.Cycles > 0 {
				reason += fmt.Sprintf(" (after %d power cycles)", j.Cycles)
			}
			m.beginStop(ctx, e, StateFailed, reason, v.change)
			return
		}
		m.met.retries.WithLabelValues(string(j.Kind), "power_cycle").Inc()
		_, _ = m.commit(ctx, e, func(j *Job) error {
			now := time.Now().UTC()
			if v.change != nil {
				v.change(j)
			}
			j.note(now, m.cfg.MaxTimeline, "%s; power-cycling to netboot again (%d of %d)", v.cycle, j.Cycles+1, m.cfg.Cycles)
			j.Cycles++
			m.enter(j, PhaseFencing, now)
			return nil
		})
		return
	}
	_, _ = m.commit(ctx, e, func(j *Job) error {
		now := time.Now().UTC()
		if v.msg != "" {
			j.note(now, m.cfg.MaxTimeline, "%s", v.msg)
		}
		if v.change != nil {
			v.change(j)
		}
		if v.done {
			j.closePhase(now)
			j.State = StateSucceeded
			j.note(now, m.cfg.MaxTimeline, "%s succeeded", j.Kind)
			return nil
		}
		m.enter(j, v.next, now)
		return nil
	})
}

// needsPowerOff reports whether a reimage that ends in phase p without success must be
// powered off: from powering-on to verifying the agent runs or may run, and the disk holds a
// partial or unverified image that must not boot.
func needsPowerOff(j Job) bool {
	if j.Kind != KindReimage {
		return false
	}
	switch j.Phase {
	case PhasePoweringOn, PhaseNetbooting, PhaseWriting, PhaseVerifying:
		return true
	}
	return false
}

// beginStop ends a job that failed or was cancelled: at once when there is nothing to clean
// up, else through the stopping state (committed first, so that a restart finishes it).
func (m *Manager) beginStop(ctx context.Context, e *entry, outcome State, reason string, change func(*Job)) {
	_, _ = m.commit(ctx, e, func(j *Job) error {
		now := time.Now().UTC()
		if j.State.Done() || j.State == StateStopping {
			return errNoChange
		}
		if change != nil {
			change(j)
		}
		j.Cancel = nil
		if needsPowerOff(*j) && (outcome == StateCancelled || !m.cfg.LeaveFailedOn) {
			j.closePhase(now)
			j.State, j.End = StateStopping, &End{State: outcome, Reason: reason}
			j.Deadline = now.Add(m.cfg.Timeouts[PhaseStopping])
			j.Attempts = 0
			j.openPhase(PhaseStopping, now)
			j.note(now, m.cfg.MaxTimeline, "%s in %s: %s; powering the machine off", outcome, j.Phase, reason)
			return nil
		}
		j.closePhase(now)
		j.State, j.Reason = outcome, reason
		j.note(now, m.cfg.MaxTimeline, "%s in %s: %s", outcome, j.Phase, reason)
		return nil
	})
}

// stopping powers the machine off (read back) and ends the job as End says. A machine that
// cannot be powered off does not keep the job open: the job ends with both reasons.
func (m *Manager) stopping(ctx context.Context, e *entry, j Job) {
	sctx, cancel := context.WithDeadline(ctx, j.Deadline)
	defer cancel()
	err := m.try(sctx, e, "power off", func(ctx context.Context) error { return m.setPower(ctx, j.Machine, power.Off) })
	if ctx.Err() != nil {
		return
	}
	_, _ = m.commit(ctx, e, func(j *Job) error {
		now := time.Now().UTC()
		j.closePhase(now)
		j.State, j.Reason = j.End.State, j.End.Reason
		if err != nil {
			j.Reason += "; and the machine could not be powered off: " + err.Error()
			j.note(now, m.cfg.MaxTimeline, "COULD NOT POWER THE MACHINE OFF: %v", err)
		} else {
			j.note(now, m.cfg.MaxTimeline, "machine is off (verified)")
		}
		j.End = nil
		return nil
	})
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
