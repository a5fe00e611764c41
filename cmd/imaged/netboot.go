package main

import (
	"fmt"
	"net"
	"time"

	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/dhcp"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/ipxe"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/routeradv"
	"github.com/imaged/imaged/internal/store"
	"github.com/imaged/imaged/internal/tftp"
)

// addNetboot constructs (and binds) the DHCP server, the router advertisement sender and the
// TFTP server that the config asks for.
func (d *daemon) addNetboot(obs *observer, roots []string) error {
	cfg := d.cfg
	if cfg.DHCP.Mode != config.ModeOff {
		srv, err := d.newDHCP(dhcpConfig(cfg), obs)
		if err != nil {
			return err
		}
		d.components["dhcp"] = srv
	}
	if cfg.RAEnabled() {
		s, err := routeradv.New(routeradv.Config{Interface: cfg.DHCP.Interface, Prefix: cfg.DHCP.RouterAdvertisements.Prefix.Prefix,
			Interval: cfg.DHCP.RouterAdvertisements.Interval.Duration}, d.log.With("component", "ra"))
		if err != nil {
			return err
		}
		d.components["ra"] = s
	}
	if cfg.TFTPEnabled() {
		s, err := tftp.New(tftp.Config{Listen: cfg.TFTP.Listen.String(), Roots: roots, MaxTransfers: cfg.TFTP.MaxTransfers,
			MaxPerClient: cfg.TFTP.MaxPerClient, MaxTimeout: cfg.TFTP.MaxTimeout.Duration},
			tftp.Deps{Log: d.log.With("component", "tftp"), Registerer: d.reg, Observer: obs})
		if err != nil {
			return err
		}
		d.components["tftp"] = s
	}
	return nil
}

// dhcpConfig maps the config file's dhcp and boot sections onto the DHCP server's Config.
func dhcpConfig(cfg *config.File) dhcp.Config {
	base := cfg.HTTP.PublicURL.URL
	dc := dhcp.Config{
		Mode:       dhcp.Mode(cfg.DHCP.Mode),
		Interface:  cfg.DHCP.Interface,
		ServerIP:   cfg.DHCP.ServerIP.Addr,
		Subnet:     cfg.DHCP.Subnet.Prefix,
		Router:     cfg.DHCP.Router.Addr,
		DomainName: cfg.DHCP.DomainName,
		LeaseTime:  cfg.DHCP.LeaseTime.Duration,
		Unknown:    dhcp.UnknownPolicy(cfg.DHCP.UnknownClients),
		Boot: dhcp.Boot{
			BIOSFile:    cfg.Boot.BIOSFile,
			UEFIx64File: cfg.Boot.UEFIFile,
			ARM64File:   cfg.Boot.ARM64File,
			HTTPBase:    base,
			ScriptURL:   func(mac net.HardwareAddr) string { return ipxe.ScriptURL(base, mac) },
		},
	}
	if cfg.TLSEnabled() && cfg.HTTP.TLS.IPXEHTTPS {
		tlsBase := cfg.HTTP.TLS.PublicURL.URL
		dc.Boot.HTTPSScriptURL = func(mac net.HardwareAddr) string { return ipxe.ScriptURL(tlsBase, mac) }
	}
	for _, a := range cfg.DHCP.DNS {
		dc.DNS = append(dc.DNS, a.Addr)
	}
	if p := cfg.DHCP.Pool; p != nil {
		dc.PoolStart, dc.PoolEnd = p.Start.Addr, p.End.Addr
	}
	return dc
}

// newDHCP constructs (and binds) the DHCP server over the daemon's inventory, leases and metrics.
func (d *daemon) newDHCP(dc dhcp.Config, obs *observer) (*dhcp.Server, error) {
	return dhcp.New(dc, dhcp.Deps{
		Inventory:  dhcpInventory{d.inv},
		Leases:     dhcpLeases{d.st},
		Observer:   obs,
		Log:        d.log.With("component", "dhcp"),
		Registerer: d.reg,
	})
}

type dhcpInventory struct{ inv *inventory.Inventory }

func (i dhcpInventory) Lookup(mac net.HardwareAddr) (dhcp.Host, bool) {
	m, ok := i.inv.ByMAC(mac)
	if !ok {
		return dhcp.Host{}, false
	}
	return dhcp.Host{ID: m.ID, Addr: m.IP, Hostname: m.Hostname, Netboot: true}, true
}

type dhcpLeases struct{ st *store.Store }

func (l dhcpLeases) Leases() ([]dhcp.Lease, error) {
	sl, err := l.st.Leases()
	if err != nil {
		return nil, err
	}
	out := make([]dhcp.Lease, 0, len(sl))
	for _, x := range sl {
		if len(x.MAC) == 0 || !x.Addr.IsValid() {
			return nil, fmt.Errorf("stored lease %q → %q is corrupt", x.MAC, x.Addr)
		}
		out = append(out, dhcp.Lease{MAC: net.HardwareAddr(x.MAC), Addr: x.Addr, Expiry: x.Expiry, Hostname: x.Hostname, State: x.State})
	}
	return out, nil
}

func (l dhcpLeases) PutLease(x dhcp.Lease) error {
	return l.st.PutLease(machines.Lease{MAC: machines.MAC(x.MAC), Addr: x.Addr, Expiry: x.Expiry, Hostname: x.Hostname, State: x.State})
}

func (l dhcpLeases) DeleteLease(mac net.HardwareAddr) error {
	return l.st.DeleteLease(machines.MAC(mac))
}

// Observe records DHCP traffic: unknown clients are noted for `imaged machines unknown`, known
// machines get a timeline event (and their leased address is remembered, so that their TFTP and
// HTTP requests are attributed to them).
func (o *observer) Observe(ob dhcp.Observation) {
	if !ob.Known {
		o.inv.SawUnknown(ob.MAC, ob.Client, int(ob.Arch))
		return
	}
	if ob.Addr.IsValid() && ob.Disposition == dhcp.DispositionOffer {
		o.inv.NoteAddr(ob.MAC, ob.Addr)
	}
	if ob.Addr.IsValid() && ob.Disposition == dhcp.DispositionAck && !o.proxy {
		o.inv.NoteLease(ob.MAC, ob.Addr)
	}
	if o.jobs != nil && (ob.Disposition == dhcp.DispositionAck || ob.Disposition == dhcp.DispositionOffer) {
		o.jobs.Observe(ob.MachineID, jobs.Signal{Kind: jobs.SignalDHCP})
	}
	msg := fmt.Sprintf("DHCP %s from %s client: %s", ob.MsgType, ob.Client, ob.Disposition)
	if o.proxy {
		msg = "proxy" + msg
	}
	if ob.Addr.IsValid() {
		msg += " " + ob.Addr.String()
	}
	if ob.BootFile != "" {
		msg += ", boot file " + ob.BootFile
	}
	// The fields identify the exchange: a repeat with the same ones is coalesced (BootEvent).
	fields := map[string]string{"mac": ob.MAC.String(), "type": ob.MsgType, "client": ob.Client, "arch": fmt.Sprint(int(ob.Arch)), "disposition": ob.Disposition}
	if ob.Addr.IsValid() {
		fields["addr"] = ob.Addr.String()
	}
	if ob.BootFile != "" {
		fields["boot_file"] = ob.BootFile
	}
	if ob.Vendor != "" {
		fields["vendor_class"] = ob.Vendor
	}
	o.inv.BootEvent(machines.Event{Machine: ob.MachineID, Time: ob.Time, Kind: "dhcp", Message: msg, Fields: fields}, o.waiting(ob.MachineID))
}

// TransferDone records a TFTP transfer on the timeline of the machine at its address.
func (o *observer) TransferDone(t tftp.Transfer) {
	m, ok := o.inv.ByAddr(t.Remote.Addr())
	if !ok {
		return
	}
	o.inv.BootEvent(machines.Event{Machine: m.ID, Kind: "tftp",
		Message: fmt.Sprintf("TFTP %s: %s, %d bytes (blksize %d) in %s", t.File, t.Outcome, t.Bytes, t.BlockSize, t.Duration.Round(time.Millisecond)),
		Fields:  map[string]string{"file": t.File, "outcome": t.Outcome, "bytes": fmt.Sprint(t.Bytes)}}, o.waiting(m.ID))
}
