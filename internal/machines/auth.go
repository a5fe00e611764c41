package machines

import (
	"net/netip"
	"time"
)

// BootToken authorises one netboot of one machine: the iPXE script puts it on the agent's
// kernel command line and the agent presents it in its hello, which consumes it. The daemon
// keeps boot tokens in memory; only those a job waits for are stored, so that the job's hello
// survives a restart of the daemon.
type BootToken struct {
	Hash      string    `json:"hash"` // hex SHA-256 of the token; the token itself is never stored
	MachineID string    `json:"machine_id"`
	MAC       MAC       `json:"mac"`
	Profile   string    `json:"profile"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
	// Addr is the only address the hello may come from: the one imaged's DHCP leased to MAC.
	// Zero when imaged is not the DHCP server.
	Addr netip.Addr `json:"addr,omitzero"`
	// Used is when a hello consumed the token, from UsedFrom.
	Used     *time.Time `json:"used,omitempty"`
	UsedFrom netip.Addr `json:"used_from,omitzero"`
}

// Session authorises an agent's requests after its hello: its plan, progress, challenge and
// result. It is bound to the machine, the MAC and the address the hello came from; a machine
// has at most one.
type Session struct {
	Hash      string     `json:"hash"` // hex SHA-256 of the session token
	MachineID string     `json:"machine_id"`
	MAC       MAC        `json:"mac"`
	Addr      netip.Addr `json:"addr"`
	Issued    time.Time  `json:"issued"`
	Expires   time.Time  `json:"expires"`
}
