package dhcp

import (
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Decision is what a netboot client is told to load, and how.
type Decision struct {
	// File is the boot file name (TFTP) or URL (UEFI HTTP boot, iPXE script); empty when the
	// client is not booted, and then Reason says why.
	File   string
	Reason string
	// NextServer is siaddr: the TFTP server.
	NextServer netip.Addr
	// VendorClass is option 60 for the reply: "PXEClient" or "HTTPClient", or empty.
	VendorClass string
	// PXEDiscovery adds option 43 {6: [8]} (PXE_DISCOVERY_CONTROL: use the boot file directly).
	PXEDiscovery bool
	// IPXE adds option 175 {176: [1]} (iPXE no-pxedhcp).
	IPXE bool
}

// PXE and iPXE encapsulated option values.
var (
	// PXE 2.1 Table 2-1: option 43 suboption 6 PXE_DISCOVERY_CONTROL, bit 3 (8): "if a boot file
	// name is present in the initial DHCP or ProxyDHCP offer, download it: no boot server
	// discovery, no menu, no prompt". 255 ends the encapsulated options.
	pxeVendorOptions = []byte{6, 1, 8, 255}
	// Pitfall P4: iPXE waits 2-3 s for ProxyDHCP offers unless the offer carries 175.176
	// (no-pxedhcp) = 1, i.e. option 175 = b0 01 01.
	ipxeNoProxyDHCP = []byte{optIPXENoProxy, 1, 1}
)

// Decide picks the boot file for a client with MAC mac. It is pure: the same inputs always
// give the same Decision.
func (b Boot) Decide(c Client, mac net.HardwareAddr) Decision {
	d := Decision{NextServer: b.TFTPServer}
	tftp := func(file, what string) Decision {
		d.VendorClass, d.PXEDiscovery = "PXEClient", true
		if file == "" {
			d.Reason = "no boot file configured for " + what
		}
		d.File = file
		return d
	}
	switch c.Kind {
	case KindIPXE:
		// iPXE always gets its script, never an NBP: handing iPXE undionly.kpxe or ipxe.efi
		// again would chainload forever (pitfall P1).
		d.IPXE = true
		if b.ScriptURL == nil {
			d.Reason = "no iPXE script URL configured"
			return d
		}
		d.File = b.ScriptURL(mac)
		if c.HTTPS && b.HTTPSScriptURL != nil {
			d.File = b.HTTPSScriptURL(mac)
		}
		return d
	case KindPXE:
		switch c.Arch {
		case ArchBIOS:
			return tftp(b.BIOSFile, "BIOS PXE")
		case ArchUEFIx64, ArchUEFIx64B:
			return tftp(b.UEFIx64File, "x64 UEFI PXE")
		case ArchUEFIARM64:
			return tftp(b.ARM64File, "arm64 UEFI PXE")
		}
		d.Reason = "PXE client architecture " + c.String() + " is not supported"
		return d
	case KindHTTP:
		// UEFI 2.x §24.7.2: the offer must carry option 60 "HTTPClient" or the firmware
		// ignores it; the boot file is a URI.
		d.VendorClass = "HTTPClient"
		var file, what string
		switch c.Arch {
		case ArchHTTPx64:
			file, what = b.UEFIx64File, "x64 UEFI HTTP boot"
		case ArchHTTPARM64:
			file, what = b.ARM64File, "arm64 UEFI HTTP boot"
		default:
			d.Reason = "HTTP boot client architecture " + c.String() + " is not supported"
			return d
		}
		switch {
		case file == "":
			d.Reason = "no boot file configured for " + what
		case b.HTTPBase == nil:
			d.Reason = "no HTTP base URL configured for " + what
		default:
			d.File = b.HTTPBase.JoinPath("boot", "assets", file).String()
		}
		return d
	}
	d.Reason = "not a netboot client"
	return d
}

// apply writes d into reply: siaddr, the file field and option 67, and options 60, 43 and 175.
// Option 97 (machine UUID) is echoed from req when present, as PXE 2.1 asks of PXE replies.
func (d Decision) apply(reply, req *dhcpv4.DHCPv4) {
	if d.File == "" {
		return
	}
	reply.ServerIPAddr = d.NextServer.AsSlice()
	// The fixed 128-byte file field (RFC 2131 §2) is what PXE ROMs read; longer names (URLs)
	// only fit in option 67, which iPXE and UEFI HTTP boot read first.
	if len(d.File) < 128 {
		reply.BootFileName = d.File
	}
	reply.Options[optBootFile] = []byte(d.File)
	if d.VendorClass != "" {
		reply.Options[optVendorClass] = []byte(d.VendorClass)
	}
	if d.PXEDiscovery {
		reply.Options[optVendorOpts] = pxeVendorOptions
	}
	if d.IPXE {
		reply.Options[optIPXEEncap] = ipxeNoProxyDHCP // pitfall P4: b0 01 01
	}
	if id, ok := req.Options[optMachineID]; ok {
		reply.Options[optMachineID] = id
	}
}
