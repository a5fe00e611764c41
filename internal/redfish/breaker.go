package redfish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// breaker is the per-BMC circuit breaker. After threshold consecutive failed operations it
// opens: calls fail fast with power.ErrDegraded until cooldown has passed, then exactly one
// probe call is let through; its success closes the breaker, its failure opens it for another
// cooldown. Only failures that say something about the BMC count (see isBMCFailure).
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu       sync.Mutex
	failures int
	lastErr  string
	open     bool
	openedAt time.Time // start of the current cooldown
	since    time.Time // last change of open
	probing  bool      // a probe call is in flight
}

// allow says whether a call may go ahead. probe is true for the one call let through after
// the cooldown; it must report back with done.
func (b *breaker) allow() (probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return false, nil
	}
	if wait := b.cooldown - time.Since(b.openedAt); wait > 0 || b.probing {
		if wait < 0 {
			wait = 0
		}
		return false, fmt.Errorf("%w since %s after %d failures in a row (last: %s); next probe in %s",
			power.ErrDegraded, b.since.Format(time.RFC3339), b.failures, b.lastErr, wait.Round(time.Second))
	}
	b.probing = true
	return true, nil
}

// done records a call's outcome and reports whether the breaker opened or closed.
func (b *breaker) done(probe bool, err error) (changed bool, h power.Health) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	switch {
	case err == nil || !isBMCFailure(err):
		if err != nil && !isBMCSuccess(err) {
			// Cancelled by our caller: says nothing about the BMC. A cancelled probe
			// leaves the breaker open; the next call probes again.
			return false, b.healthLocked()
		}
		b.failures, b.lastErr = 0, ""
		if b.open {
			b.open, b.since, changed = false, time.Now(), true
		}
	default:
		b.failures++
		b.lastErr = err.Error()
		switch {
		case !b.open && b.failures >= b.threshold:
			b.open, b.since, b.openedAt, changed = true, time.Now(), time.Now(), true
		case b.open && probe:
			b.openedAt = time.Now() // the probe failed: another cooldown
		}
	}
	return changed, b.healthLocked()
}

func (b *breaker) health() power.Health {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.healthLocked()
}

func (b *breaker) healthLocked() power.Health {
	return power.Health{Degraded: b.open, Failures: b.failures, LastError: b.lastErr, Since: b.since}
}

// isBMCFailure: the BMC could not be reached, failed (5xx), refused our login (401: a wrong
// password repeated locks the account on most BMCs, so the breaker stops that too) or answered
// garbage. Any other 4xx, 403 included (an account without the privilege for one action), is
// about our request, and the BMC working as it should.
func isBMCFailure(err error) bool {
	var he *power.HTTPError
	return errors.Is(err, power.ErrUnreachable) || errors.Is(err, power.ErrUnavailable) ||
		errors.Is(err, power.ErrMalformed) || errors.As(err, &he) && he.Status == http.StatusUnauthorized
}

// isBMCSuccess: an error that still proves the BMC answered sensibly (not a cancellation).
func isBMCSuccess(err error) bool {
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}
