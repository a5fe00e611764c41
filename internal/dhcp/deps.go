package dhcp

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Host is what the Inventory knows of a machine.
type Host struct {
	ID string
	// Addr is the reserved address; the zero Addr means "take one from the pool".
	Addr     netip.Addr
	Hostname string
	// Netboot says whether the machine is given boot options; if false it only gets an address.
	Netboot bool
}

// Inventory says whether a MAC is one of our machines. It is called for every packet, from
// many goroutines, and should answer from memory.
type Inventory interface {
	Lookup(mac net.HardwareAddr) (Host, bool)
}

// Lease states.
const (
	LeaseBound    = "bound"
	LeaseDeclined = "declined" // the client found Addr in use (DHCPDECLINE); Expiry ends the hold
)

// Lease is a persisted lease. Offers are not persisted.
type Lease struct {
	MAC      net.HardwareAddr
	Addr     netip.Addr
	Expiry   time.Time
	Hostname string
	State    string
}

// LeaseStore keeps leases across restarts. A lease is durable when PutLease returns. Methods
// are called concurrently (from up to Config.Workers goroutines), so an implementation can
// batch commits.
type LeaseStore interface {
	Leases() ([]Lease, error)
	PutLease(Lease) error
	DeleteLease(mac net.HardwareAddr) error
}

// Observation describes one decoded client packet and what was done with it.
type Observation struct {
	Time      time.Time
	MAC       net.HardwareAddr
	Known     bool
	MachineID string // Host.ID when Known
	MsgType   string // "discover", "request", … ("bootp" when option 53 is missing)
	Arch      Arch
	Client    string // Client.String(): "bios-pxe", "uefi-pxe", "uefi-http", "ipxe", "dhcp", …
	Vendor    string // option 60 as the client sent it
	// Disposition is what happened: see the Disposition* constants.
	Disposition string
	BootFile    string     // the boot file or URL sent, if any
	Addr        netip.Addr // the address offered or acknowledged, if any
}

// Observer is told about every decoded client packet, unknown MACs included (never about
// malformed ones). It is called synchronously from the packet workers and must not block.
type Observer interface {
	Observe(Observation)
}

// Deps are the Server's collaborators. Inventory, Observer, Log and Registerer may be nil
// (nobody is known; nothing observed; no logs; metrics not registered). Leases is required in
// ModeServer.
type Deps struct {
	Inventory  Inventory
	Leases     LeaseStore
	Observer   Observer
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Dispositions: what was done with a packet (Observation.Disposition and the disposition label
// of imaged_dhcp_packets_total).
const (
	DispositionMalformed = "malformed" // undecodable, truncated, oversized, not a BOOTREQUEST, no MAC
	DispositionOverload  = "overload"  // dropped: the work queue was full
	DispositionIgnored   = "ignored"   // not for us (another server chosen, foreign relay, not a netboot client in proxy mode, …)
	DispositionUnknown   = "unknown"   // unknown MAC, not answered (UnknownIgnore)
	DispositionNoAddress = "noaddress" // no address to give (pool exhausted, no pool, reservation in use)
	DispositionNoBoot    = "noboot"    // proxy mode: netboot client with nothing to boot
	DispositionOffer     = "offer"
	DispositionAck       = "ack"
	DispositionNak       = "nak"
	DispositionRelease   = "release"
	DispositionDecline   = "decline"
	DispositionError     = "error" // lease store or socket failure
)
