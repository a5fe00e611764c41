package jobs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// try runs an idempotent step (a BMC call, a catalog update) until it succeeds, at most
// 1+Retries times within the phase's deadline (ctx), with a doubling pause between attempts.
// Failed attempts are committed on the job (Attempts survives a restart, so a daemon that
// keeps crashing does not retry for ever).
func (m *Manager) try(ctx context.Context, e *entry, what string, f func(context.Context) error) error {
	var last error
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return interrupted(what, last)
		}
		last = err
		j, cerr := m.commit(ctx, e, func(j *Job) error {
			j.Attempts++
			j.note(time.Now().UTC(), m.cfg.MaxTimeline, "%s failed (attempt %d of %d): %v", what, j.Attempts, 1+m.cfg.Retries, err)
			return nil
		})
		if cerr != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		m.met.retries.WithLabelValues(string(j.Kind), "step").Inc()
		if j.Attempts > m.cfg.Retries {
			return fmt.Errorf("%s failed %d times, last: %w", what, j.Attempts, err)
		}
		pause := min(m.cfg.RetryBackoff<<min(j.Attempts-1, 10), 30*time.Second)
		if serr := sleep(ctx, pause); serr != nil {
			return interrupted(what, last)
		}
	}
}

// interrupted describes a step cut short by its phase's deadline (or a cancel).
func interrupted(what string, last error) error {
	if last == nil {
		return fmt.Errorf("%s: no answer in time", what)
	}
	return fmt.Errorf("%s: no success in time; last error: %w", what, last)
}

// setPower brings the machine to want (power.On or power.Off) and proves it: the state is read
// first (nothing to do when it is already there, which makes the step idempotent), then after
// the command it is read back until it shows want or PowerSettle has passed. A BMC that accepts
// the command and still reads the old state is an error, not success.
func (m *Manager) setPower(ctx context.Context, machine string, want power.State) error {
	st, err := m.d.Power.PowerState(ctx, machine)
	if err != nil {
		return fmt.Errorf("read the power state: %w", err)
	}
	if st == want {
		return nil
	}
	verb, act := "power on", power.ActionOn
	if want == power.Off {
		verb, act = "power off", power.ActionOff
	}
	if err := m.d.Power.Power(ctx, machine, act); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	settle := time.Now().Add(m.cfg.PowerSettle)
	poll := min(2*time.Second, max(m.cfg.PowerSettle/10, 100*time.Millisecond))
	for {
		st, err = m.d.Power.PowerState(ctx, machine)
		if err == nil && st == want {
			return nil
		}
		if !time.Now().Before(settle) {
			if err != nil {
				return fmt.Errorf("%s: reading the state back: %w", verb, err)
			}
			return fmt.Errorf("%s was accepted, but the BMC still reads %q after %s", verb, st, m.cfg.PowerSettle)
		}
		if err := sleep(ctx, poll); err != nil {
			return fmt.Errorf("%s: waiting for the state to read %s: %w", verb, strings.ToLower(string(want)), err)
		}
	}
}
