package jobs

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

// Power states that Power.PowerState reports (Redfish PowerState values; others, such as
// "PoweringOn", are neither).
const (
	PowerOn  = "On"
	PowerOff = "Off"
)

// Boot targets for Power.BootOnce (the words of internal/power's BootTarget).
const (
	BootPXE  = "pxe"  // the next boot, and only that one, from the network
	BootDisk = "disk" // the next boot from the local disk (Redfish "Hdd")
)

// Power controls machines by their inventory id. Each call is one attempt: the Manager retries
// and reads the state back itself.
type Power interface {
	PowerState(ctx context.Context, machine string) (string, error)
	PowerOff(ctx context.Context, machine string) error // immediate (ForceOff), not a shutdown
	PowerOn(ctx context.Context, machine string) error
	BootOnce(ctx context.Context, machine, target string) error
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
