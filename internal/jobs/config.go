package jobs

import (
	"fmt"
	"maps"
	"time"
)

// Config tunes the Manager. Zero values take the defaults for real hardware; LabConfig returns
// values for QEMU blades under TCG.
type Config struct {
	// Timeouts bound each phase (see DefaultTimeouts); the ones given replace the defaults.
	Timeouts map[Phase]time.Duration
	// AgentSilence is how long the agent may go without reporting progress while it writes
	// before it is taken for lost (it reports every second). Default 3 min.
	AgentSilence time.Duration
	// Retries is how many more times a failed idempotent step (a BMC call, a catalog update) is
	// tried within its phase. 0 means the default, 3; a negative value means no retries.
	Retries int
	// RetryBackoff is the pause after the first failed attempt; it doubles, up to 30 s.
	// Default 2 s.
	RetryBackoff time.Duration
	// PowerSettle is how long a power change the BMC accepted may take to read back. Default 60 s.
	PowerSettle time.Duration
	// Cycles is how many times a machine whose netboot or agent went silent is powered off and
	// netbooted again before the job fails. 0 means the default, 2; negative means none.
	Cycles int
	// ProbeInterval is the pause between readiness probes; ProbeTimeout bounds one probe.
	// Defaults 10 s and 5 s.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// MachineProbes are the probes of the machines that have their own, by machine id: used
	// when a request has none.
	MachineProbes map[string]Probe
	// DefaultProbe is used when a request and its machine have none. When it is nil too, the
	// booted OS must check in with the image's digest.
	DefaultProbe *Probe

	// PerChassis is how many reimages may run at once in one chassis. Default 8.
	PerChassis int
	// LinkBytesPerSecond is the bandwidth of the appliance's link to the blades (default
	// 10 Gb/s); MinBytesPerSecond is the share each running write should at least get
	// (default 100 MB/s). At most LinkBytesPerSecond/MinBytesPerSecond reimages fetch at once;
	// the others wait in the queue rather than slow every write down.
	LinkBytesPerSecond int64
	MinBytesPerSecond  int64
	// ExpectNetboot and ExpectBoot are the typical durations of a netboot (power on to the
	// agent's hello) and of a boot into the OS, for queue ETAs. Defaults 4 and 6 min.
	ExpectNetboot time.Duration
	ExpectBoot    time.Duration

	// LeaveFailedOn leaves a machine whose reimage failed while the agent was running (or could
	// be) powered on, in the agent, for inspection at its console. By default it is powered off:
	// its disk holds an unverified image that must not boot, and an agent left running must not
	// write outside a job. A cancel always powers such a machine off.
	LeaveFailedOn bool
	// MaxTimeline bounds each job's timeline. Default 100.
	MaxTimeline int
}

// DefaultTimeouts are the phase timeouts for real hardware: BMCs that take tens of seconds per
// call, servers that spend minutes in POST, images of tens of GB.
func DefaultTimeouts() map[Phase]time.Duration {
	return map[Phase]time.Duration{
		PhaseQueued:     24 * time.Hour,
		PhaseFencing:    3 * time.Minute,
		PhaseBootSet:    2 * time.Minute,
		PhasePoweringOn: 3 * time.Minute,
		PhaseNetbooting: 10 * time.Minute, // POST with option ROMs, PXE, iPXE, kernel + initramfs
		PhaseWriting:    2 * time.Hour,    // the whole write; a silent agent is caught by AgentSilence
		PhaseVerifying:  time.Minute,      // verifying and ready decide at once; never reached
		PhaseRebooting:  5 * time.Minute,
		PhaseBootingOS:  30 * time.Minute, // POST again, then a first boot (Windows specialize is slow)
		PhaseReady:      2 * time.Minute,
		PhaseStopping:   3 * time.Minute,
	}
}

// LabConfig is tuned for the QEMU/TCG lab: an emulated BMC that answers at once, netboot in
// 10–25 s, a 256 MiB write in about 10 s, an OS boot of a minute or two under TCG.
func LabConfig() Config {
	return Config{
		Timeouts: map[Phase]time.Duration{
			PhaseQueued:     time.Hour,
			PhaseFencing:    30 * time.Second,
			PhaseBootSet:    30 * time.Second,
			PhasePoweringOn: 30 * time.Second,
			PhaseNetbooting: 90 * time.Second,
			PhaseWriting:    10 * time.Minute,
			PhaseVerifying:  30 * time.Second,
			PhaseRebooting:  60 * time.Second,
			PhaseBootingOS:  5 * time.Minute,
			PhaseReady:      60 * time.Second,
			PhaseStopping:   60 * time.Second,
		},
		AgentSilence:  30 * time.Second,
		RetryBackoff:  time.Second,
		PowerSettle:   10 * time.Second,
		ProbeInterval: 2 * time.Second,
		ProbeTimeout:  2 * time.Second,
		PerChassis:    4,
		ExpectNetboot: 20 * time.Second,
		ExpectBoot:    60 * time.Second,
	}
}

func (c Config) withDefaults() (Config, error) {
	t := DefaultTimeouts()
	for p, d := range c.Timeouts {
		if _, ok := t[p]; !ok {
			return c, fmt.Errorf("jobs: timeout for unknown phase %q", p)
		}
		if d <= 0 {
			return c, fmt.Errorf("jobs: timeout of %s must be positive, not %s", p, d)
		}
		t[p] = d
	}
	c.Timeouts = t
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AgentSilence, 3*time.Minute)
	def(&c.RetryBackoff, 2*time.Second)
	def(&c.PowerSettle, time.Minute)
	def(&c.ProbeInterval, 10*time.Second)
	def(&c.ProbeTimeout, 5*time.Second)
	def(&c.ExpectNetboot, 4*time.Minute)
	def(&c.ExpectBoot, 6*time.Minute)
	switch {
	case c.Retries == 0:
		c.Retries = 3
	case c.Retries < 0:
		c.Retries = 0
	}
	switch {
	case c.Cycles == 0:
		c.Cycles = 2
	case c.Cycles < 0:
		c.Cycles = 0
	}
	if c.PerChassis <= 0 {
		c.PerChassis = 8
	}
	if c.LinkBytesPerSecond <= 0 {
		c.LinkBytesPerSecond = 10e9 / 8
	}
	if c.MinBytesPerSecond <= 0 {
		c.MinBytesPerSecond = 100e6
	}
	if c.MaxTimeline <= 0 {
		c.MaxTimeline = 100
	}
	if c.DefaultProbe != nil {
		if err := c.DefaultProbe.validate(); err != nil {
			return c, fmt.Errorf("jobs: default probe: %w", err)
		}
		p := *c.DefaultProbe
		c.DefaultProbe = &p
	}
	for id, p := range c.MachineProbes {
		if err := p.validate(); err != nil {
			return c, fmt.Errorf("jobs: probe of machine %s: %w", id, err)
		}
	}
	c.MachineProbes = maps.Clone(c.MachineProbes)
	return c, nil
}

// linkSlots is how many reimages may use the link at once.
func (c Config) linkSlots() int {
	return max(1, int(c.LinkBytesPerSecond/c.MinBytesPerSecond))
}
