// Package vbmc is imaged's virtual chassis BMC: a Redfish service (DMTF DSP0266) whose
// ComputerSystems are backed by Blades, in the lab QEMU processes in network namespaces
// (lab.PowerVM). It lets imaged's Redfish client, and independent clients such as redfishtool
// and sushy, drive real power and one-time boot overrides without a real chassis.
//
// It is a protocol leaf written from the specification with the standard library only: it must
// not import internal/redfish or gofish, so that the client's tests against it check the client
// against the spec rather than against itself. Only the lab and tests import it.
//
// What it serves, all under /redfish/v1 (see server.go for the routes):
//
//   - ServiceRoot, the OData service document, SessionService with a bounded session table
//     (X-Auth-Token sessions and HTTP Basic), a Systems collection with one ComputerSystem per
//     Blade, their EthernetInterfaces, one Manager and one Chassis.
//   - PATCH of Boot properties with ETag/If-Match, and the ComputerSystem.Reset action.
//   - Oem.Imaged.ConsoleLog on each system: the blade's serial console as text/plain, with
//     Range requests or ?tail=N lines, so an operator can read why a boot failed.
//
// Errors use the Redfish error envelope with messages of the DMTF Base registry.
package vbmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Blade is one machine of the chassis as the BMC drives it. Implementations must be safe for
// concurrent calls: a ForceOff may arrive while a GracefulShutdown is still waiting.
type Blade interface {
	// ID is the system's Redfish Id, such as "ms1-c1n2": a single URL path segment.
	ID() string
	// MAC is the address of the blade's (first) network interface.
	MAC() net.HardwareAddr
	// PowerState must come from the real machine (for QEMU, whether its process runs), never
	// from what the BMC last asked for: a guest that powers itself off is Off.
	PowerState() PowerState
	// PowerOn starts the machine booting as boot says, and returns once it runs.
	PowerOn(ctx context.Context, boot Boot) error
	// ForceOff cuts the power and returns once the machine is off.
	ForceOff(ctx context.Context) error
	// GracefulShutdown presses the ACPI power button and waits until the guest has powered off
	// or ctx is done. A guest without an OS (or one that ignores ACPI) stays on: then it
	// returns an error wrapping ctx.Err() and the machine is still On, as on real hardware.
	GracefulShutdown(ctx context.Context) error
	// ConsolePath is the file holding the blade's serial console across power cycles, or "".
	ConsolePath() string
}

// BootModer is optionally implemented by a Blade that knows its firmware: "Legacy" (BIOS) or
// "UEFI". It is the system's initial BootSourceOverrideMode; other blades start with "UEFI".
type BootModer interface {
	BootMode() string
}

// PowerState is a Redfish PowerState (Resource.PowerState).
type PowerState string

// The Redfish power states.
const (
	StateOn          PowerState = "On"
	StateOff         PowerState = "Off"
	StatePoweringOn  PowerState = "PoweringOn"
	StatePoweringOff PowerState = "PoweringOff"
)

// BootSource is a BootSourceOverrideTarget this BMC offers.
type BootSource string

// The boot override targets of this BMC (BootSourceOverrideTarget@Redfish.AllowableValues).
const (
	BootNone     BootSource = "None"     // no override: the blade's own boot order (its disk)
	BootPxe      BootSource = "Pxe"      // network boot (PXE / iPXE)
	BootHdd      BootSource = "Hdd"      // the local disk
	BootUefiHttp BootSource = "UefiHttp" // UEFI HTTP boot, from HttpBootUri or the DHCP offer
)

// Boot tells PowerOn where the machine boots.
type Boot struct {
	Source BootSource // BootNone: the blade's own order
	// Persistent is true for a Continuous override: reboots the guest initiates boot Source
	// too. Otherwise (Once, or no override) only this power-on does, as on real firmware.
	Persistent bool
	// HTTPURI is HttpBootUri for BootUefiHttp, or "".
	HTTPURI string
}

// Config configures the Server. Zero values take the defaults documented on each field.
type Config struct {
	// Addr is the TCP address to listen on, such as "127.0.0.1:0" (tests) or "10.99.0.1:443".
	// Listener, if set, is used instead (for example a socket opened inside a network
	// namespace). With neither, the Server only offers Handler and Run fails.
	Addr     string
	Listener net.Listener
	// CertFile and KeyFile are the PEM server certificate and key (see GenerateCA). They are
	// required unless PlainHTTP is set: no real BMC serves Redfish over plain HTTP.
	CertFile, KeyFile string
	// PlainHTTP serves without TLS, for tests and clients that need it.
	PlainHTTP bool
	// Username and Password are the BMC's one account (required).
	Username, Password string
	// SessionTimeout ends a session after this long without a request (default 30 min; Redfish
	// allows 30 s to 24 h).
	SessionTimeout time.Duration
	// MaxSessions bounds the session table (default 16, as on common BMCs). A login when the
	// table is full gets 503 SessionLimitExceeded: evicting the oldest session instead would
	// silently log out a live client (imaged itself) in the middle of a reimage.
	MaxSessions int
	// ChassisID is the Id of the chassis and of its manager (default "ms1").
	ChassisID string
	// FirmwareVersion is the manager's FirmwareVersion (default "imaged-vbmc").
	FirmwareVersion string
	// GracefulTimeout bounds how long GracefulShutdown and GracefulRestart wait for the guest
	// to power off (default 2 min). The reset request itself is answered at once.
	GracefulTimeout time.Duration
}

const (
	defaultSessionTimeout  = 30 * time.Minute
	defaultMaxSessions     = 16
	defaultChassisID       = "ms1"
	defaultFirmwareVersion = "imaged-vbmc"
	defaultGracefulTimeout = 2 * time.Minute
)

func (c *Config) setDefaults() {
	if c.SessionTimeout == 0 {
		c.SessionTimeout = defaultSessionTimeout
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = defaultMaxSessions
	}
	if c.ChassisID == "" {
		c.ChassisID = defaultChassisID
	}
	if c.FirmwareVersion == "" {
		c.FirmwareVersion = defaultFirmwareVersion
	}
	if c.GracefulTimeout == 0 {
		c.GracefulTimeout = defaultGracefulTimeout
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Username == "" || c.Password == "" {
		errs = append(errs, errors.New("username and password are required"))
	}
	if !c.PlainHTTP && (c.CertFile == "" || c.KeyFile == "") {
		errs = append(errs, errors.New("a certificate and key are required unless PlainHTTP is set"))
	}
	if c.PlainHTTP && (c.CertFile != "" || c.KeyFile != "") {
		errs = append(errs, errors.New("PlainHTTP and a certificate are exclusive"))
	}
	// DSP0266: "SessionTimeout ... minimum 30 seconds, maximum 86400 seconds".
	if c.SessionTimeout < 30*time.Second || c.SessionTimeout > 24*time.Hour {
		errs = append(errs, fmt.Errorf("session timeout %s is outside 30s..24h", c.SessionTimeout))
	}
	if c.MaxSessions < 1 {
		errs = append(errs, fmt.Errorf("max sessions %d must be at least 1", c.MaxSessions))
	}
	if !validID(c.ChassisID) {
		errs = append(errs, fmt.Errorf("chassis id %q is not a URL path segment", c.ChassisID))
	}
	if c.GracefulTimeout < 0 {
		errs = append(errs, fmt.Errorf("graceful timeout %s is negative", c.GracefulTimeout))
	}
	return errors.Join(errs...)
}

// validID reports whether id can be a Redfish Id and one segment of a URL path as is.
func validID(id string) bool {
	if id == "" || len(id) > 64 || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// discard is the logger of a Server given none.
var discard = slog.New(slog.DiscardHandler)
