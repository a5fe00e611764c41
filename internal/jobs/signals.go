package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/machines"
)

// SignalKind is what the daemon saw a machine do.
type SignalKind string

// Signals, in the order a netboot produces them.
const (
	SignalDHCP     SignalKind = "dhcp"     // the DHCP server answered the machine (PXE or iPXE)
	SignalScript   SignalKind = "script"   // the boot handler served the machine's iPXE script
	SignalHello    SignalKind = "hello"    // the agent's hello was accepted
	SignalProgress SignalKind = "progress" // the agent's progress report
	SignalResult   SignalKind = "result"   // the agent's result, after inventory.RecordResult
)

// Signal is one observation about a machine.
type Signal struct {
	Kind     SignalKind
	Progress *agentapi.Progress // SignalProgress
	// SignalResult: Verified is true when the server accepted the write (RecordResult made the
	// image current); otherwise Reason says why not (the agent's error or the refusal).
	Verified bool
	Reason   string
}

// signals is what a job's mailbox holds: the latest of each kind since the last reset.
type signals struct {
	dhcp, script, hello time.Time
	progress            *Progress
	result              *Result
}

// mailbox passes signals to the goroutine that drives a job. It keeps the latest of each kind,
// so that nothing important (a hello, a result) is lost to a burst of progress reports and
// memory stays bounded.
type mailbox struct {
	wake chan struct{} // cap 1
	mu   sync.Mutex
	s    signals
}

func (b *mailbox) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *mailbox) put(s Signal, now time.Time) {
	b.mu.Lock()
	switch s.Kind {
	case SignalDHCP:
		b.s.dhcp = now
	case SignalScript:
		b.s.script = now
	case SignalHello:
		b.s.hello = now
	case SignalProgress:
		if s.Progress != nil {
			b.s.progress = &Progress{BytesDone: s.Progress.BytesDone, BytesTotal: s.Progress.BytesTotal, RateBytes: s.Progress.RateBytes, Time: now}
		}
	case SignalResult:
		b.s.result = &Result{Verified: s.Verified, Reason: s.Reason, Time: now}
	}
	b.mu.Unlock()
	b.poke()
}

func (b *mailbox) reset() {
	b.mu.Lock()
	b.s = signals{}
	b.mu.Unlock()
}

func (b *mailbox) snapshot() signals {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	s.progress, s.result = clonePtr(s.progress), clonePtr(s.result)
	return s
}

func (b *mailbox) liveProgress() (Progress, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s.progress == nil {
		return Progress{}, false
	}
	return *b.s.progress, true
}

// wait returns when a signal comes, after d, or with ctx's error when ctx ends.
func (b *mailbox) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.wake:
	case <-t.C:
	}
	return nil
}

// Observe passes what the daemon saw a machine do to the machine's running job. Signals for a
// machine without a running job are dropped: an agent or a DHCP client acts on its own only
// through the plan, which a job sets.
func (m *Manager) Observe(machine string, s Signal) {
	m.mu.Lock()
	e := m.byMachine[machine]
	running := e != nil && e.job.State == StateRunning
	m.mu.Unlock()
	if !running {
		m.log.Debug("signal for a machine without a running job", "machine", machine, "signal", s.Kind)
		return
	}
	e.box.put(s, time.Now().UTC())
}

// CheckInRefresh is how often an unchanged check-in of a machine that no job waits for is
// stored: the booted OS's check-ins come from its address, unauthenticated, so a repeat costs
// the daemon nothing durable; it refreshes the time in memory only.
const CheckInRefresh = time.Hour

// CheckIn records that the OS booted on machine says it runs digest. The machine is stale when
// the digest is not its assigned image; a job waiting for the machine to be ready takes a
// matching check-in as proof and fails on a stale one. The check-in is stored before a job
// sees it, so that it survives a restart; a repeat of the stored check-in (same digest, same
// assignment) within CheckInRefresh while no job runs for the machine is kept in memory only.
func (m *Manager) CheckIn(machine string, digest images.Digest) (machines.CheckIn, error) {
	mach, ok := m.d.Catalog.Machine(machine)
	if !ok {
		return machines.CheckIn{}, fmt.Errorf("jobs: check-in of %q: %w", machine, ErrUnknownMachine)
	}
	if digest.IsZero() {
		return machines.CheckIn{}, fmt.Errorf("%w: a check-in needs the digest of the image the OS runs", ErrInvalid)
	}
	c := machines.CheckIn{Machine: machine, Digest: digest, Time: time.Now().UTC(), Expected: mach.AssignedImage}
	c.Stale = !c.Expected.IsZero() && c.Digest != c.Expected
	m.mu.Lock()
	prev, had := m.checkIns[machine]
	e := m.byMachine[machine]
	running := e != nil && e.job.State == StateRunning
	repeat := had && !running && prev.Digest == c.Digest && prev.Expected == c.Expected && c.Time.Sub(storedAt(prev)) < CheckInRefresh
	if repeat {
		c.StoredAt = storedAt(prev)
		m.checkIns[machine] = c
		m.mu.Unlock()
		return c, nil
	}
	m.mu.Unlock()
	if err := m.d.Store.PutCheckIn(c); err != nil {
		return c, fmt.Errorf("jobs: store check-in: %w", err)
	}
	m.mu.Lock()
	m.checkIns[machine] = c
	m.updateGaugesLocked()
	e = m.byMachine[machine]
	m.mu.Unlock()
	if e != nil {
		e.box.poke()
	}
	if m.d.Events != nil {
		msg := "the booted OS checked in with " + digest.String()
		if c.Stale {
			msg = fmt.Sprintf("STALE: the booted OS checked in with %s, but the machine is assigned %s", digest, c.Expected)
		}
		m.d.Events(machines.Event{Time: c.Time, Machine: machine, Kind: "check-in", Message: msg,
			Fields: map[string]string{"digest": digest.String(), "expected": c.Expected.String(), "stale": fmt.Sprint(c.Stale)}})
	}
	return c, nil
}

// storedAt is when check-in c was stored.
func storedAt(c machines.CheckIn) time.Time {
	if !c.StoredAt.IsZero() {
		return c.StoredAt
	}
	return c.Time
}

// Active reports whether a job runs for machine: what the machine's network traffic causes is
// then worth storing on its timeline.
func (m *Manager) Active(machine string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.byMachine[machine]
	return e != nil && e.job.State == StateRunning
}

// LastCheckIn returns the machine's latest check-in; its Stale says whether the machine runs
// another image than the one it is assigned.
func (m *Manager) LastCheckIn(machine string) (machines.CheckIn, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkIns[machine]
	return c, ok
}

// Netbooting reports whether the machine's job waits for it to netboot into the agent and write
// its image (powering-on, netbooting, writing). The DHCP server and the boot handler must then
// send it to the agent whatever its configured boot profile; at any other time a machine must
// not get the agent from a reimage.
func (m *Manager) Netbooting(machine string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.byMachine[machine]
	if e == nil || e.job.State != StateRunning {
		return false
	}
	switch e.job.Phase {
	case PhasePoweringOn, PhaseNetbooting, PhaseWriting:
		return true
	}
	return false
}
