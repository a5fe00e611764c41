package jobs

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/imaged/imaged/images"
)

// Errors. The API maps ErrBusy and ErrFinished to 409, ErrNotFound and ErrUnknownMachine to 404,
// ErrInvalid to 400.
var (
	ErrBusy           = errors.New("the machine has an active job")
	ErrNotFound       = errors.New("no such job")
	ErrFinished       = errors.New("the job has finished")
	ErrUnknownMachine = errors.New("machine not in the inventory")
	ErrInvalid        = errors.New("invalid job request")
)

// Kind is what a job does.
type Kind string

// Kinds.
const (
	// KindReimage writes an image onto the machine's disk through the netbooted agent and boots it.
	KindReimage Kind = "reimage"
	// KindReboot restarts the machine into what its disk holds and waits until it is ready.
	KindReboot Kind = "reboot"
)

// Phase is a step of a job. A job's Phase is the step it is in, or the one it ended in.
type Phase string

// Phases, in the order a reimage goes through them. A reboot goes queued → rebooting →
// booting-os → ready.
const (
	PhaseQueued     Phase = "queued"      // waiting for a slot (per chassis, and on the link)
	PhaseFencing    Phase = "fencing"     // power off, read back as off
	PhaseBootSet    Phase = "boot-set"    // one-time boot override: network
	PhasePoweringOn Phase = "powering-on" // assign the image, forget the current one, power on
	PhaseNetbooting Phase = "netbooting"  // DHCP, iPXE script, agent hello
	PhaseWriting    Phase = "writing"     // the agent writes and reports progress
	PhaseVerifying  Phase = "verifying"   // the server's check of the agent's result
	PhaseRebooting  Phase = "rebooting"   // off (read back), boot override: disk, on (read back)
	PhaseBootingOS  Phase = "booting-os"  // until the readiness probe passes / the OS checks in
	PhaseReady      Phase = "ready"       // the final check of the machine record
	// PhaseStopping is the clean-up after a failure or a cancel (powering the machine off). It
	// appears in Phases and in the phase histogram, never as a job's Phase.
	PhaseStopping Phase = "stopping"
)

var reimagePhases = []Phase{PhaseQueued, PhaseFencing, PhaseBootSet, PhasePoweringOn, PhaseNetbooting,
	PhaseWriting, PhaseVerifying, PhaseRebooting, PhaseBootingOS, PhaseReady}

var rebootPhases = []Phase{PhaseQueued, PhaseRebooting, PhaseBootingOS, PhaseReady}

// Phases are the phases a job of kind k goes through, in order.
func (k Kind) Phases() []Phase {
	if k == KindReboot {
		return slices.Clone(rebootPhases)
	}
	return slices.Clone(reimagePhases)
}

// linkPhases are the phases in which a reimage uses (or is about to use) the link to the
// appliance: admission limits how many jobs are in them at once.
func (p Phase) usesLink() bool {
	switch p {
	case PhaseFencing, PhaseBootSet, PhasePoweringOn, PhaseNetbooting, PhaseWriting, PhaseVerifying:
		return true
	}
	return false
}

// State is where a job is in its life.
type State string

// States.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateStopping  State = "stopping" // failed or cancelled; cleaning up (End says which)
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
)

// Done reports whether the job has finished.
func (s State) Done() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled
}

// Probe says how to tell that a booted machine is ready.
type Probe struct {
	// Kind is "tcp" (connect to Port), "http" (GET Path on Port, expect Status) or "" (no network
	// probe: the booted OS must check in with the image's digest).
	Kind   string `json:"kind,omitempty"`
	Port   int    `json:"port,omitempty"`
	Path   string `json:"path,omitempty"`   // http; default "/"
	Status int    `json:"status,omitempty"` // http; default 200
	// CheckIn also requires the booted OS to check in with the image's digest.
	CheckIn bool `json:"check_in,omitempty"`
}

func (p Probe) validate() error {
	switch p.Kind {
	case "":
		if !p.CheckIn {
			return fmt.Errorf("%w: a probe needs a kind (tcp, http) or check_in", ErrInvalid)
		}
	case "tcp", "http":
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("%w: probe port %d", ErrInvalid, p.Port)
		}
	default:
		return fmt.Errorf("%w: probe kind %q (want tcp or http)", ErrInvalid, p.Kind)
	}
	return nil
}

func (p Probe) String() string {
	s := "check-in"
	switch p.Kind {
	case "tcp":
		s = fmt.Sprintf("tcp/%d", p.Port)
	case "http":
		s = fmt.Sprintf("http GET :%d%s → %d", p.Port, p.Path, p.Status)
	}
	if p.Kind != "" && p.CheckIn {
		s += " and check-in"
	}
	return s
}

// needsCheckIn reports whether readiness requires a check-in.
func (p Probe) needsCheckIn() bool { return p.Kind == "" || p.CheckIn }

// Request asks for a job.
type Request struct {
	Kind    Kind
	Machine string
	Image   images.Image // reimage: the image to write (resolved in the catalog)
	By      string       // who asked (for the record)
	Probe   *Probe       // nil: Config.MachineProbes', else DefaultProbe, else check-in
}

// Filter selects jobs for List.
type Filter struct {
	Machine string // "" for every machine
	Active  bool   // only unfinished jobs
	Limit   int    // the newest Limit jobs; 0 for all
}

// Job is one reimage or reboot, as stored (JSON) and as the API shows it.
type Job struct {
	ID      string        `json:"id"` // time-ordered: sorts by creation
	Kind    Kind          `json:"kind"`
	Machine string        `json:"machine"`
	Chassis string        `json:"chassis,omitempty"`
	Image   *images.Image `json:"image,omitempty"` // reimage
	By      string        `json:"by,omitempty"`
	Probe   Probe         `json:"probe"`

	State State `json:"state"`
	// Phase is the phase the job is in, or the one it ended in (for a failed job, the phase
	// that failed).
	Phase    Phase     `json:"phase"`
	Step     string    `json:"step,omitempty"` // sub-step of rebooting: off, boot, on
	Deadline time.Time `json:"deadline"`       // absolute: a restart does not extend it
	Reason   string    `json:"reason,omitempty"`
	Attempts int       `json:"attempts,omitempty"` // failed attempts (BMC calls) in this phase
	Cycles   int       `json:"cycles,omitempty"`   // power cycles back to netbooting

	Netboot  *Netboot  `json:"netboot,omitempty"`  // what the current netboot was seen to do
	Progress *Progress `json:"progress,omitempty"` // the agent's latest progress (stored every few seconds)
	Result   *Result   `json:"result,omitempty"`   // the agent's result as the server judged it
	OffAt    time.Time `json:"off_at,omitzero"`    // rebooting: when the machine was read back off
	Ready    *Ready    `json:"ready,omitempty"`    // what made the booted machine ready
	Cancel   *Cancel   `json:"cancel,omitempty"`   // a cancel request, until it is carried out
	End      *End      `json:"end,omitempty"`      // while stopping: how the job will end

	Phases   []PhaseTime `json:"phases"`
	Timeline []Entry     `json:"timeline"`
	Seq      int         `json:"seq"` // timeline entries ever added (older ones are dropped)

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`

	// Queue is computed when a queued job is read (Get, List); it is never stored.
	Queue *Queue `json:"queue,omitempty"`
}

// Netboot is when the sub-steps of a netboot were seen (zero: not yet).
type Netboot struct {
	DHCP   time.Time `json:"dhcp,omitzero"`
	Script time.Time `json:"script,omitzero"`
	Hello  time.Time `json:"hello,omitzero"`
}

// Progress is a snapshot of the agent's write.
type Progress struct {
	BytesDone  int64     `json:"bytes_done"`
	BytesTotal int64     `json:"bytes_total"`
	RateBytes  float64   `json:"rate_bytes_per_second"`
	Time       time.Time `json:"time"`
}

// Result is the outcome of the agent's write as the server judged it.
type Result struct {
	Verified bool      `json:"verified"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// Ready records what made a booted machine ready.
type Ready struct {
	Probed    time.Time `json:"probed,omitzero"`     // the probe passed
	CheckedIn time.Time `json:"checked_in,omitzero"` // the OS checked in with the right digest
}

// Cancel is a cancel request.
type Cancel struct {
	By   string    `json:"by"`
	Time time.Time `json:"time"`
}

// End is how a stopping job will end.
type End struct {
	State  State  `json:"state"` // failed or cancelled
	Reason string `json:"reason"`
}

// PhaseTime is when a phase started and ended (End is zero while it runs). A phase that runs
// again (after a power cycle) has another entry.
type PhaseTime struct {
	Phase Phase     `json:"phase"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
}

// Entry is a line of a job's timeline.
type Entry struct {
	Seq     int       `json:"seq"`
	Time    time.Time `json:"time"`
	Phase   Phase     `json:"phase"`
	Message string    `json:"message"`
}

// Queue is a queued job's place and estimated times.
type Queue struct {
	Position int       `json:"position"` // 1: the next to start
	Start    time.Time `json:"start_eta"`
	Done     time.Time `json:"done_eta"`
}

// digest is what the machine should run when the job is done (zero for a reboot: its assigned
// image, as the machine record says).
func (j *Job) digest() images.Digest {
	if j.Image == nil {
		return images.Digest{}
	}
	return j.Image.Digest
}

// clone copies j deeply enough that changing the copy never changes j.
func (j Job) clone() Job {
	c := j
	if j.Image != nil {
		img := *j.Image
		c.Image = &img
	}
	c.Netboot = clonePtr(j.Netboot)
	c.Progress = clonePtr(j.Progress)
	c.Result = clonePtr(j.Result)
	c.Ready = clonePtr(j.Ready)
	c.Cancel = clonePtr(j.Cancel)
	c.End = clonePtr(j.End)
	c.Queue = clonePtr(j.Queue)
	c.Phases = append([]PhaseTime(nil), j.Phases...)
	c.Timeline = append([]Entry(nil), j.Timeline...)
	return c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// note adds a line to the timeline, keeping the newest limit.
func (j *Job) note(now time.Time, limit int, format string, args ...any) {
	j.Seq++
	j.Timeline = append(j.Timeline, Entry{Seq: j.Seq, Time: now, Phase: j.Phase, Message: fmt.Sprintf(format, args...)})
	if len(j.Timeline) > limit {
		j.Timeline = append(j.Timeline[:0:0], j.Timeline[len(j.Timeline)-limit:]...)
	}
}

// openPhase starts the timing of a phase.
func (j *Job) openPhase(p Phase, now time.Time) {
	j.Phases = append(j.Phases, PhaseTime{Phase: p, Start: now})
}

// closePhase ends the timing of the running phase, if any.
func (j *Job) closePhase(now time.Time) {
	if n := len(j.Phases); n > 0 && j.Phases[n-1].End.IsZero() {
		j.Phases[n-1].End = now
	}
}

// phaseStart is when the latest entry of phase p started.
func (j *Job) phaseStart(p Phase) time.Time {
	for i := len(j.Phases) - 1; i >= 0; i-- {
		if j.Phases[i].Phase == p {
			return j.Phases[i].Start
		}
	}
	return time.Time{}
}
