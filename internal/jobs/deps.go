package jobs

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/store"
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
	Machine(id string) (store.Machine, bool)
	// Assign makes img the image the machine is to run (what the agent's plan says to write).
	Assign(id string, img images.Image, by string) (store.Machine, error)
	// ClearCurrentImage records that the machine is no longer known to run any image (its disk
	// is about to be overwritten). The agent's verified result sets it again.
	ClearCurrentImage(id string) error
}

// Prober tells whether a booted machine answers its readiness probe.
type Prober interface {
	Probe(ctx context.Context, m store.Machine, p Probe) error
}

// Store keeps the jobs and the check-ins; *store.Store implements it.
type Store interface {
	PutJob(store.JobRecord) error
	Job(id string) (store.JobRecord, error)
	Jobs(machine string) ([]store.JobRecord, error)
	ActiveJobs() ([]store.JobRecord, error)
	PutCheckIn(store.CheckIn) error
	CheckIns() ([]store.CheckIn, error)
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
	Events     func(store.Event)
	Log        *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}

var _ Store = (*store.Store)(nil)
