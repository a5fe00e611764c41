package jobs

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// Power controls machines by their inventory id; *fleet.BMCs implements it. Each call is one
// attempt: the Manager retries and reads the state back itself.
type Power interface {
	PowerState(ctx context.Context, machine string) (power.State, error)
	// Power performs a. The Manager asks for power.ActionOff (immediate, not a shutdown) and
	// power.ActionOn.
	Power(ctx context.Context, machine string, a power.Action) error
	// BootOnce sets the machine's next boot, and only that one; uri is for power.UefiHttp.
	BootOnce(ctx context.Context, machine string, t power.BootTarget, uri string) error
}

// Catalog is the inventory's record of the machines.
type Catalog interface {
	Machine(id string) (machines.Machine, bool)
	// Assign makes img the image the machine is to run (what the agent's plan says to write).
	Assign(id string, img images.Image, by string) (machines.Machine, error)
	// ClearCurrentImage records that the machine is no longer known to run any image (its disk
	// is about to be overwritten). The agent's verified result sets it again.
	ClearCurrentImage(id string) error
}

// Prober tells whether a booted machine answers its readiness probe.
type Prober interface {
	Probe(ctx context.Context, m machines.Machine, p Probe) error
}

// Store keeps the jobs, as the JSON of a Job, and the check-ins; *store.Store implements it. A
// job that does not exist is an error matching fs.ErrNotExist.
type Store interface {
	// PutJob stores job id of machine durably; a done job cannot be reopened, nor a job moved.
	PutJob(id, machine string, done bool, data []byte) error
	Job(id string) ([]byte, error)
	Jobs(machine string) ([][]byte, error) // every machine's for ""; oldest first
	ActiveJobs() ([][]byte, error)         // the jobs not done, oldest first
	PutCheckIn(machines.CheckIn) error
	CheckIns() ([]machines.CheckIn, error)
}

// Deps are the Manager's collaborators. Power, Catalog and Store are required.
//
// There is no clock: timers and timestamps use package time, which testing/synctest fakes.
type Deps struct {
	Power   Power
	Catalog Catalog
	Prober  Prober // nil: NetProber{}
	Store   Store
	// Events receives a machine event for every line of a job's timeline (transitions, retries,
	// what was observed); inventory.Event fits. It must not block for long.
	Events     func(machines.Event)
	Log        *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}
