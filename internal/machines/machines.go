// Package machines holds the records of the machines imaged manages and of what it sees on the
// blade network: a Machine of the inventory (as the config declares it, plus what imaged has
// learnt), an agent's Hello, a booted OS's CheckIn, a line of a machine's history (Event), DHCP
// leases, unknown clients, boot tokens and agent sessions.
//
// internal/store keeps them in its state file; the jobs, the inventory and the API pass them
// around and write them as JSON without linking the store. The package depends on the standard
// library and images only; anything may import it.
package machines

import (
	"net/netip"
	"time"

	"github.com/imaged/imaged/images"
)

// Machine is one blade of the inventory as the config file declares it, plus what imaged has
// learned about it.
type Machine struct {
	ID          string     `json:"id"`
	MACs        []MAC      `json:"macs"`
	IP          netip.Addr `json:"ip,omitzero"` // reserved for it in the config; zero: none
	Hostname    string     `json:"hostname,omitempty"`
	Chassis     string     `json:"chassis,omitempty"`
	Slot        int        `json:"slot,omitempty"` // the cartridge bay in the chassis (0: not given)
	Node        int        `json:"node,omitempty"` // the node in the cartridge, 1 to 4 (0: no slot given)
	WorkerGroup string     `json:"worker_group,omitempty"`
	WorkerType  string     `json:"worker_type,omitempty"`
	BMC         string     `json:"bmc,omitempty"`
	Boot        string     `json:"boot"`
	// DiskSerial and DiskByPath pick the disk the agent writes (from the config); empty: the
	// only non-removable disk large enough.
	DiskSerial string `json:"disk_serial,omitempty"`
	DiskByPath string `json:"disk_by_path,omitempty"`
	LastHello  *Hello `json:"last_hello,omitempty"`
	// AssignedImage is the digest the machine should run; CurrentImage the digest it was last
	// verified to run (zero: none). Both (and AssignedChannel) are kept across config reloads.
	AssignedImage images.Digest `json:"assigned_image,omitzero"`
	CurrentImage  images.Digest `json:"current_image,omitzero"`
	// AssignedChannel is the channel (name@channel) the assignment was made through, "" when it
	// named a version or a digest: the machine follows it, and is behind it once the channel
	// points at another image than the one the machine was verified to run.
	AssignedChannel string `json:"assigned_channel,omitempty"`
}

// Hello is an agent's announcement that it runs on a machine.
type Hello struct {
	Time         time.Time  `json:"time"`
	MAC          MAC        `json:"mac"`
	IP           netip.Addr `json:"ip,omitzero"` // the hello's source address
	AgentVersion string     `json:"agent_version,omitempty"`
	Uptime       float64    `json:"uptime_seconds,omitempty"`
}

// CheckIn is the latest report of a machine's booted operating system about the image it runs.
type CheckIn struct {
	Machine string        `json:"machine"`
	Digest  images.Digest `json:"digest"` // what the OS says it runs
	Time    time.Time     `json:"time"`
	// Expected is the digest the machine should run (its assigned image) when the OS checked in,
	// zero when none is assigned; Stale is true when the OS runs something else.
	Expected images.Digest `json:"expected,omitzero"`
	Stale    bool          `json:"stale"`
	// StoredAt is when this check-in was last stored, if Time is a later repeat kept in memory.
	StoredAt time.Time `json:"-"`
}
