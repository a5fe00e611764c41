// Package power is what imaged asks of a machine's power controller: list the machines behind
// it, read their power state, set a one-time network boot, and power them on, off or through a
// restart. internal/redfish implements it for Redfish BMCs; another driver (a chassis manager's
// SSH CLI, IPMI) can be added beside it without touching the callers: internal/power/fleet, which
// holds a driver per BMC and finds each machine behind its BMC for the API, the reimage jobs and
// the `imaged bmc` CLI.
//
// It is a leaf: standard library only, so that anyone may import it.
package power

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// Driver controls the machines behind one power controller (a BMC, a chassis manager).
//
// Every mutation is proven before it returns nil: Power returns once the machine was read back in
// the state the action leads to, SetBootOnce once the override was read back as set. When that
// proof does not come in time the error matches ErrTimeout.
type Driver interface {
	// Systems lists every machine behind the controller (one for a blade's own BMC, dozens for a
	// chassis manager).
	Systems(ctx context.Context) ([]System, error)
	// System reads one machine; an unknown id matches ErrNotFound.
	System(ctx context.Context, id string) (System, error)
	// SetBootOnce makes the machine's next boot, and only that one, boot target. uri is the boot
	// URL for UefiHttp and must be empty otherwise.
	SetBootOnce(ctx context.Context, id string, target BootTarget, uri string) error
	// Power performs action and waits until the machine reached the state it leads to.
	Power(ctx context.Context, id string, action Action) error
}

// HealthReporter is implemented by drivers that track the health of their controller (a
// circuit breaker that stops calling a failing BMC for a while).
type HealthReporter interface {
	Health() Health
}

// Health is the state of a controller's circuit breaker.
type Health struct {
	// Degraded is true while calls fail fast with ErrDegraded: the controller failed Failures
	// operations in a row and is left alone until its cooldown has passed.
	Degraded bool
	// Failures counts the consecutive failed operations (0 after a success).
	Failures int
	// LastError is the text of the most recent failure ("" when none since the last success).
	LastError string
	// Since is when Degraded last changed (zero if it never did).
	Since time.Time
}

// System is one machine as its controller describes it.
type System struct {
	// ID names the machine to its driver: "1" for a blade's own BMC, the cartridge and node such
	// as "C1N1" behind a chassis manager.
	ID           string
	Name         string
	Manufacturer string
	Model        string
	SerialNumber string
	// Health is the controller's own word for the machine's health: "OK", "Warning",
	// "Critical", or "" when it gives none.
	Health string
	Power  State
	// MACs are the machine's NIC addresses as the controller reports them, in its order.
	MACs []net.HardwareAddr
	// ResetTypes are the reset types the controller says it accepts (Redfish ResetType values),
	// empty when it does not say.
	ResetTypes []string
	Boot       BootOverride
}

// BootOverride is a machine's boot source override.
type BootOverride struct {
	// Target is where the override points; values outside the BootTarget constants are the
	// controller's own names in lower case ("cd", "usb", "biossetup").
	Target BootTarget
	// Enabled is "Once", "Continuous" or "Disabled" (the Redfish BootSourceOverrideEnabled).
	Enabled string
	// Mode is "UEFI", "Legacy" or "" when not reported.
	Mode string
	// URI is the UEFI HTTP boot URL when Target is UefiHttp.
	URI string
	// Targets are the targets the controller accepts, as it names them ("Pxe", "Hdd", …), empty
	// when it does not say.
	Targets []string
}

// Once reports whether the override applies to the next boot only.
func (b BootOverride) Once() bool { return b.Enabled == "Once" }

// State is a machine's power state.
type State string

// Power states.
const (
	On          State = "On"
	Off         State = "Off"
	PoweringOn  State = "PoweringOn"
	PoweringOff State = "PoweringOff"
	Unknown     State = "Unknown"
)

// Action is what Power is asked to do. The values are the words the CLI accepts.
type Action string

// Actions.
const (
	// ActionOn powers a machine on (nothing to do when it is on).
	ActionOn Action = "on"
	// ActionOff cuts power at once, like holding the power button.
	ActionOff Action = "off"
	// ActionShutdown asks the operating system to shut down and waits for power off.
	ActionShutdown Action = "shutdown"
	// ActionRestart is a forced restart. A machine that is off is powered on.
	ActionRestart Action = "restart"
	// ActionGracefulRestart asks the operating system to restart. A machine that is off is
	// powered on.
	ActionGracefulRestart Action = "graceful-restart"
	// ActionCycle removes power and gives it back. A machine that is off is powered on.
	ActionCycle Action = "cycle"
)

// Actions lists every Action, in the order the CLI documents them.
var Actions = []Action{ActionOn, ActionOff, ActionShutdown, ActionRestart, ActionGracefulRestart, ActionCycle}

// ParseAction turns a CLI word into an Action.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions {
		if strings.EqualFold(s, string(a)) {
			return a, nil
		}
	}
	return "", fmt.Errorf("power: unknown action %q (want one of %s)", s, joinStrings(Actions))
}

// BootTarget is where a one-time boot override points. The values are the words the CLI accepts.
type BootTarget string

// Boot targets.
const (
	Pxe      BootTarget = "pxe"       // network boot through the NIC's PXE ROM
	UefiHttp BootTarget = "uefi-http" // UEFI HTTP boot from a URI
	Disk     BootTarget = "disk"      // the local disk (Redfish "Hdd")
	None     BootTarget = "none"      // no override
)

// BootTargets lists the targets SetBootOnce accepts.
var BootTargets = []BootTarget{Pxe, UefiHttp, Disk, None}

// ParseBootTarget turns a CLI word into a BootTarget.
func ParseBootTarget(s string) (BootTarget, error) {
	for _, t := range BootTargets {
		if strings.EqualFold(s, string(t)) {
			return t, nil
		}
	}
	return "", fmt.Errorf("power: unknown boot target %q (want one of %s)", s, joinStrings(BootTargets))
}

func joinStrings[T ~string](vs []T) string {
	ss := make([]string, len(vs))
	for i, v := range vs {
		ss[i] = string(v)
	}
	return strings.Join(ss, ", ")
}
