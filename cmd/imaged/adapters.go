package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/ipxe"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// The adapters below let the leaf packages (boot, dhcp, tftp) see the inventory through the
// small interfaces they declare.

type bootInventory struct {
	inv  *inventory.Inventory
	jobs *jobs.Manager // may be nil
}

// ByMAC gives the machine its configured profile, except while a reimage job has it netboot:
// then the agent, whatever the profile says (a machine that boots "local" is reimaged too).
func (b bootInventory) ByMAC(mac net.HardwareAddr) (ipxe.Machine, bool) {
	m, ok := b.inv.ByMAC(mac)
	if !ok {
		return ipxe.Machine{}, false
	}
	profile := m.Boot
	if b.jobs != nil && b.jobs.Netbooting(m.ID) {
		profile = ipxe.ProfileAgent
	}
	return ipxe.Machine{ID: m.ID, MAC: mac, Profile: profile, Hostname: m.Hostname, WorkerGroup: m.WorkerGroup, WorkerType: m.WorkerType}, true
}

type bootTokens struct {
	inv  *inventory.Inventory
	jobs *jobs.Manager // may be nil
}

// Issue hands out a boot token for a script fetched from remote; the inventory refuses a client
// that does not hold the address imaged leased to the MAC. A token that a job waits for is
// stored, so that the hello still counts after a restart; others stay in memory.
func (b bootTokens) Issue(m ipxe.Machine, remote netip.Addr) (string, error) {
	persist := m.ID != "" && b.jobs != nil && b.jobs.Netbooting(m.ID)
	tok, err := b.inv.IssueToken(inventory.TokenRequest{Machine: m.ID, MAC: m.MAC, Profile: m.Profile, Remote: remote, Persist: persist})
	if errors.Is(err, inventory.ErrNotLeased) || errors.Is(err, inventory.ErrWrongAddress) {
		return "", fmt.Errorf("%w: %w", ipxe.ErrRefused, err)
	}
	return tok, err
}

// observer turns what the protocol servers did into events on the machines' timelines.
type observer struct {
	inv   *inventory.Inventory
	jobs  *jobs.Manager // may be nil
	log   *slog.Logger
	proxy bool // DHCP runs as proxyDHCP
}

func remoteAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(remote)
	return a.Unmap()
}

// waiting reports whether a job runs for machine: only then are its boot events stored (else
// they are kept in memory, coalesced), so that anonymous traffic costs nothing durable.
func (o *observer) waiting(machine string) bool { return o.jobs != nil && o.jobs.Active(machine) }

func (o *observer) ScriptServed(m ipxe.Machine, remote string) {
	if m.ID == "" {
		return
	}
	o.inv.BootEvent(machines.Event{Machine: m.ID, Kind: "script", Message: fmt.Sprintf("iPXE script served (profile %s)", m.Profile),
		Fields: map[string]string{"remote": remoteAddr(remote).String(), "profile": m.Profile}}, o.waiting(m.ID))
	if o.jobs != nil {
		o.jobs.Observe(m.ID, jobs.Signal{Kind: jobs.SignalScript})
	}
}

func (o *observer) AssetServed(name, remote string, status int, n int64, d time.Duration) {
	m, ok := o.inv.ByAddr(remoteAddr(remote))
	if !ok {
		return
	}
	o.inv.BootEvent(machines.Event{Machine: m.ID, Kind: "http", Message: fmt.Sprintf("HTTP %s: %d, %d bytes in %s", name, status, n, d.Round(time.Millisecond)),
		Fields: map[string]string{"file": name, "status": fmt.Sprint(status), "bytes": fmt.Sprint(n)}}, o.waiting(m.ID))
}
