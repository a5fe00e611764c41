package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/machines"
)

// Manager runs the jobs. It is safe for concurrent use.
type Manager struct {
	cfg Config
	d   Deps
	log *slog.Logger
	met *metrics

	mu        sync.Mutex
	jobs      map[string]*entry // unfinished jobs by id
	byMachine map[string]*entry // the unfinished job of each machine
	checkIns  map[string]machines.CheckIn
	finished  map[string]Job // the newest finished job of each machine (Latest)
	lastID    uint64
	running   bool
	kick      chan struct{} // wakes the scheduler (cap 1)
}

// entry is an unfinished job.
type entry struct {
	// commitMu serialises the commits of this job: each one reads the job, changes it, stores it
	// and only then replaces job. It is taken before Manager.mu, never after.
	commitMu sync.Mutex
	job      Job // the last committed state; under Manager.mu
	box      mailbox
	stop     context.CancelFunc // interrupts the running phase (Cancel); under Manager.mu
	driven   bool               // a goroutine drives it; under Manager.mu
}

// New validates cfg and loads the unfinished jobs from the store; Run drives them.
func New(cfg Config, d Deps) (*Manager, error) {
	if d.Power == nil || d.Catalog == nil || d.Store == nil {
		return nil, errors.New("jobs: Power, Catalog and Store are required")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if d.Prober == nil {
		d.Prober = NetProber{}
	}
	if d.Log == nil {
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{cfg: cfg, d: d, log: d.Log, jobs: map[string]*entry{}, byMachine: map[string]*entry{},
		checkIns: map[string]machines.CheckIn{}, finished: map[string]Job{}, kick: make(chan struct{}, 1)}
	if m.met, err = newMetrics(d.Registerer, m); err != nil {
		return nil, err
	}
	all, err := d.Store.Jobs("")
	if err != nil {
		return nil, fmt.Errorf("jobs: load: %w", err)
	}
	newest := map[string][]byte{} // machine → its newest finished job's data
	newestID := map[string]string{}
	for _, data := range all {
		var j struct {
			ID, Machine string
			State       State
		}
		if json.Unmarshal(data, &j) != nil {
			continue
		}
		if v, err := strconv.ParseUint(j.ID, 32, 64); err == nil {
			m.lastID = max(m.lastID, v)
		}
		if j.State.Done() && j.ID > newestID[j.Machine] {
			newest[j.Machine], newestID[j.Machine] = data, j.ID
		}
	}
	for machine, data := range newest {
		var j Job
		if err := json.Unmarshal(data, &j); err == nil {
			m.finished[machine] = j
		}
	}
	active, err := d.Store.ActiveJobs()
	if err != nil {
		return nil, fmt.Errorf("jobs: load: %w", err)
	}
	for _, data := range active {
		var j Job
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("jobs: stored job: %w", err)
		}
		if other := m.byMachine[j.Machine]; other != nil {
			// Never written by Submit; refuse to guess which one owns the machine.
			return nil, fmt.Errorf("jobs: stored jobs %s and %s are both active on machine %s", other.job.ID, j.ID, j.Machine)
		}
		e := newEntry(j)
		m.jobs[j.ID], m.byMachine[j.Machine] = e, e
	}
	cis, err := d.Store.CheckIns()
	if err != nil {
		return nil, fmt.Errorf("jobs: load check-ins: %w", err)
	}
	for _, c := range cis {
		m.checkIns[c.Machine] = c
	}
	m.mu.Lock()
	m.updateGaugesLocked()
	m.mu.Unlock()
	return m, nil
}

func newEntry(j Job) *entry {
	return &entry{job: j, box: mailbox{wake: make(chan struct{}, 1)}}
}

// Run drives the jobs until ctx ends: the unfinished jobs loaded by New from their persisted
// phase, then every job admitted from the queue. It returns nil once ctx is done and every job's
// goroutine has stopped; the jobs stay as last committed, for the next Run.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("jobs: Run called twice")
	}
	m.running = true
	m.mu.Unlock()
	var wg sync.WaitGroup
	start := func(e *entry) {
		m.mu.Lock()
		if e.driven {
			m.mu.Unlock()
			return
		}
		e.driven = true
		m.mu.Unlock()
		wg.Go(func() {
			m.drive(ctx, e)
			m.mu.Lock()
			e.driven = false
			m.mu.Unlock()
			m.wake()
		})
	}
	m.mu.Lock()
	var resume []*entry
	for _, e := range m.jobs {
		if e.job.State != StateQueued {
			resume = append(resume, e)
		}
	}
	m.mu.Unlock()
	for _, e := range resume {
		m.log.Info("resuming job", "job", e.job.ID, "machine", e.job.Machine, "phase", e.job.Phase, "state", e.job.State)
		start(e)
	}
	for {
		next := m.admit(ctx, start)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			wg.Wait()
			m.mu.Lock()
			m.running = false
			m.mu.Unlock()
			return nil
		case <-m.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// wake makes the scheduler look at the queue again.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// newID returns a job id: the creation time in milliseconds and a counter, in 13 base-32
// digits, so ids are short, unique and sort by creation even across restarts (New starts after
// the largest stored id) and clock steps back.
func (m *Manager) newIDLocked(now time.Time) string {
	v := uint64(now.UnixMilli()) << 16
	if v <= m.lastID {
		v = m.lastID + 1
	}
	m.lastID = v
	s := strconv.FormatUint(v, 32)
	return strings.Repeat("0", max(0, 13-len(s))) + s
}

// Submit creates a queued job. A machine with an unfinished job gets ErrBusy (and that job).
func (m *Manager) Submit(ctx context.Context, req Request) (Job, error) {
	mach, ok := m.d.Catalog.Machine(req.Machine)
	if !ok {
		return Job{}, fmt.Errorf("jobs: machine %q: %w", req.Machine, ErrUnknownMachine)
	}
	now := time.Now().UTC()
	j := Job{Kind: req.Kind, Machine: mach.ID, Chassis: mach.Chassis, By: req.By, State: StateQueued,
		Phase: PhaseQueued, Deadline: now.Add(m.cfg.Timeouts[PhaseQueued]), Created: now, Updated: now}
	switch req.Kind {
	case KindReimage:
		if req.Image.Digest.IsZero() {
			return Job{}, fmt.Errorf("%w: a reimage needs an image with a digest", ErrInvalid)
		}
		img := req.Image
		j.Image = &img
	case KindReboot:
	default:
		return Job{}, fmt.Errorf("%w: kind %q (want reimage or reboot)", ErrInvalid, req.Kind)
	}
	own, hasOwn := m.cfg.MachineProbes[mach.ID]
	switch {
	case req.Probe != nil:
		if err := req.Probe.validate(); err != nil {
			return Job{}, err
		}
		j.Probe = *req.Probe
	case hasOwn:
		j.Probe = own
	case m.cfg.DefaultProbe != nil:
		j.Probe = *m.cfg.DefaultProbe
	default:
		j.Probe = Probe{CheckIn: true}
	}
	if j.Probe.Kind == "http" {
		if j.Probe.Path == "" {
			j.Probe.Path = "/"
		}
		if j.Probe.Status == 0 {
			j.Probe.Status = 200
		}
	}
	m.mu.Lock()
	if e := m.byMachine[j.Machine]; e != nil {
		busy := e.job.clone()
		m.mu.Unlock()
		return busy, fmt.Errorf("jobs: machine %s: %w (%s, %s)", j.Machine, ErrBusy, busy.ID, busy.Phase)
	}
	j.ID = m.newIDLocked(now)
	j.openPhase(PhaseQueued, now)
	what := string(j.Kind)
	if j.Image != nil {
		what += " to " + j.Image.Ref().String() + " (" + j.Image.Digest.String() + ")"
	}
	j.note(now, m.cfg.MaxTimeline, "%s requested by %s; readiness: %s", what, j.By, j.Probe)
	e := newEntry(j)
	// Reserve the machine before the slow write; the scheduler sees the job only once it is
	// stored.
	m.byMachine[j.Machine] = e
	m.mu.Unlock()
	if err := m.put(j); err != nil {
		m.mu.Lock()
		delete(m.byMachine, j.Machine)
		m.mu.Unlock()
		return Job{}, fmt.Errorf("jobs: store job: %w", err)
	}
	m.mu.Lock()
	m.jobs[j.ID] = e
	m.updateGaugesLocked()
	m.mu.Unlock()
	m.afterCommit(Job{}, j)
	m.wake()
	return m.view(e), nil
}

// put stores j (without its queue estimate, which is computed when read).
func (m *Manager) put(j Job) error {
	j.Queue = nil
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	return m.d.Store.PutJob(j.ID, j.Machine, j.State.Done(), data)
}

// errNoChange from an update function leaves the job as it is, uncommitted.
var errNoChange = errors.New("no change")

// update commits a change of an unfinished job: fn changes a copy, the copy is stored, then it
// becomes the job. A finished job leaves the Manager's maps.
func (m *Manager) update(e *entry, fn func(j *Job) error) (Job, error) {
	e.commitMu.Lock()
	defer e.commitMu.Unlock()
	m.mu.Lock()
	old := e.job
	m.mu.Unlock()
	j := old.clone()
	if err := fn(&j); err != nil {
		if errors.Is(err, errNoChange) {
			return old, nil
		}
		return old, err
	}
	j.Updated = time.Now().UTC()
	if err := m.put(j); err != nil {
		return old, fmt.Errorf("jobs: store job %s: %w", j.ID, err)
	}
	m.mu.Lock()
	e.job = j
	if j.State.Done() {
		m.finished[j.Machine] = j
		delete(m.jobs, j.ID)
		if m.byMachine[j.Machine] == e {
			delete(m.byMachine, j.Machine)
		}
	}
	m.updateGaugesLocked()
	m.mu.Unlock()
	m.afterCommit(old, j)
	return j, nil
}

// commit is update for the goroutine that drives a job: a store error is retried (with
// backoff) until it succeeds or ctx ends, since the job cannot go on without its record.
func (m *Manager) commit(ctx context.Context, e *entry, fn func(j *Job) error) (Job, error) {
	delay := time.Second
	for {
		j, err := m.update(e, fn)
		if err == nil {
			return j, nil
		}
		m.log.Error("cannot commit a job transition; retrying", "job", j.ID, "machine", j.Machine, "err", err, "retry_in", delay)
		if err := sleep(ctx, delay); err != nil {
			return j, err
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// afterCommit publishes what a commit changed: timeline lines as machine events, phase
// durations and outcomes as metrics.
func (m *Manager) afterCommit(old, j Job) {
	if old.State != j.State || old.Phase != j.Phase {
		m.wake() // a slot may have been freed
	}
	for i, p := range j.Phases {
		if !p.End.IsZero() && (i >= len(old.Phases) || old.Phases[i].End.IsZero()) {
			m.met.phase.WithLabelValues(string(j.Kind), string(p.Phase)).Observe(p.End.Sub(p.Start).Seconds())
		}
	}
	if j.State.Done() && !old.State.Done() {
		m.met.total.WithLabelValues(string(j.Kind), string(j.State)).Inc()
		if j.State == StateFailed {
			m.met.failures.WithLabelValues(string(j.Kind), string(j.Phase)).Inc()
		}
		m.log.Info("job finished", "job", j.ID, "machine", j.Machine, "kind", j.Kind, "state", j.State, "phase", j.Phase, "reason", j.Reason)
	}
	if m.d.Events == nil {
		return
	}
	for _, en := range j.Timeline {
		if en.Seq <= old.Seq {
			continue
		}
		m.d.Events(machines.Event{Time: en.Time, Machine: j.Machine, Kind: "job", Message: en.Message,
			Fields: map[string]string{"job": j.ID, "job_kind": string(j.Kind), "phase": string(en.Phase), "state": string(j.State)}})
	}
}

// current returns the job's last committed state.
func (m *Manager) current(e *entry) Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.job
}

// view is the job as Get shows it: with the live progress and, when queued, its queue ETA.
func (m *Manager) view(e *entry) Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked(e, nil)
}

func (m *Manager) viewLocked(e *entry, q map[string]Queue) Job {
	j := e.job.clone()
	if p, ok := e.box.liveProgress(); ok && j.Phase == PhaseWriting && (j.Progress == nil || p.Time.After(j.Progress.Time)) {
		j.Progress = &p
	}
	if j.State == StateQueued {
		if q == nil {
			q = m.estimateLocked(time.Now())
		}
		if x, ok := q[j.ID]; ok {
			j.Queue = &x
		}
	}
	return j
}

// Get returns a job, finished or not.
func (m *Manager) Get(id string) (Job, bool) {
	m.mu.Lock()
	e := m.jobs[id]
	m.mu.Unlock()
	if e != nil {
		return m.view(e), true
	}
	data, err := m.d.Store.Job(id)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("cannot read a stored job", "job", id, "err", err)
		}
		return Job{}, false
	}
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		m.log.Warn("cannot decode a stored job", "job", id, "err", err)
		return Job{}, false
	}
	return j, true
}

// Latest returns the newest job of machine, running or finished: what a view of every machine
// shows beside it. It reads memory only (the newest finished job of each machine is kept there),
// so that a page of 180 machines does not read 180 histories from the store.
func (m *Manager) Latest(machine string) (Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.byMachine[machine]; e != nil {
		return m.viewLocked(e, nil), true
	}
	j, ok := m.finished[machine]
	if !ok {
		return Job{}, false
	}
	return j.clone(), true
}

// List returns the jobs f selects, newest first.
func (m *Manager) List(f Filter) []Job {
	m.mu.Lock()
	q := m.estimateLocked(time.Now())
	var out []Job
	seen := map[string]bool{}
	for _, e := range m.jobs {
		if f.Machine == "" || e.job.Machine == f.Machine {
			out = append(out, m.viewLocked(e, q))
			seen[e.job.ID] = true
		}
	}
	m.mu.Unlock()
	if !f.Active {
		stored, err := m.d.Store.Jobs(f.Machine)
		if err != nil {
			m.log.Warn("cannot list stored jobs", "err", err)
		}
		for _, data := range stored {
			var j Job
			if err := json.Unmarshal(data, &j); err != nil {
				m.log.Warn("cannot decode a stored job", "err", err)
				continue
			}
			if !seen[j.ID] && j.State.Done() {
				out = append(out, j)
			}
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return strings.Compare(b.ID, a.ID) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

// Cancel asks for a job to stop. A queued job is cancelled at once; a running one stops at once
// (its BMC call or wait is interrupted) and is cleaned up as the package documentation says, so
// the job returned may still be running or stopping. Cancelling a job that is already stopping
// changes nothing; a finished one gets ErrFinished.
func (m *Manager) Cancel(id, by string) (Job, error) {
	m.mu.Lock()
	e := m.jobs[id]
	m.mu.Unlock()
	if e == nil {
		if j, ok := m.Get(id); ok {
			return j, fmt.Errorf("jobs: cancel %s: %w (%s)", id, ErrFinished, j.State)
		}
		return Job{}, fmt.Errorf("jobs: cancel %s: %w", id, ErrNotFound)
	}
	j, err := m.update(e, func(j *Job) error {
		now := time.Now().UTC()
		switch {
		case j.State.Done():
			return ErrFinished
		case j.State == StateStopping || j.Cancel != nil:
			return errNoChange
		case j.State == StateQueued:
			j.closePhase(now)
			j.State, j.Reason = StateCancelled, "cancelled by "+by+" while queued"
			j.note(now, m.cfg.MaxTimeline, "%s", j.Reason)
		default:
			j.Cancel = &Cancel{By: by, Time: now}
			j.note(now, m.cfg.MaxTimeline, "cancel requested by %s", by)
		}
		return nil
	})
	if err != nil {
		return j, fmt.Errorf("jobs: cancel %s: %w", id, err)
	}
	m.mu.Lock()
	if e.stop != nil {
		e.stop()
	}
	m.mu.Unlock()
	e.box.poke()
	m.wake()
	return m.view(e), nil
}
