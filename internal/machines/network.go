package machines

import (
	"net/netip"
	"time"
)

// What the daemon sees of hosts on the blade network, machines of the inventory or not.

// Lease is a DHCP lease, keyed by MAC.
type Lease struct {
	MAC      MAC        `json:"mac"`
	Addr     netip.Addr `json:"addr"`
	Expiry   time.Time  `json:"expiry"`
	Hostname string     `json:"hostname,omitempty"`
	State    string     `json:"state,omitempty"`
}

// Unknown is a client that asked for an address or a boot file but is not in the inventory.
type Unknown struct {
	MAC       MAC       `json:"mac"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Client    string    `json:"client,omitempty"` // bios-pxe, uefi-pxe, uefi-http, ipxe, dhcp
	Arch      int       `json:"arch,omitempty"`
}
