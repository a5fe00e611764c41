package dhcp

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Arch is a client system architecture type (option 93, RFC 4578 §2.1; values from the IANA
// "Processor Architecture Types" registry).
type Arch uint16

// The architectures imaged tells apart.
const (
	ArchBIOS      Arch = 0  // x86 BIOS PXE
	ArchUEFIIA32  Arch = 6  // 32-bit x86 UEFI
	ArchUEFIx64   Arch = 7  // x64 UEFI ("EFI BC" in RFC 4578; what x64 firmware sends)
	ArchUEFIx64B  Arch = 9  // "EFI x86-64": also x64 (RFC 4578 errata 4624 swapped 7 and 9; firmware sends both)
	ArchUEFIARM32 Arch = 10 // 32-bit ARM UEFI
	ArchUEFIARM64 Arch = 11 // arm64 UEFI PXE
	ArchHTTPx64   Arch = 16 // x64 UEFI HTTP boot
	ArchHTTPARM64 Arch = 19 // arm64 UEFI HTTP boot
)

// Kind is how a client boots off the network.
type Kind string

// The kinds of clients.
const (
	KindDHCP Kind = "dhcp" // a plain DHCP client (an OS, udhcpc, …): no boot options
	KindPXE  Kind = "pxe"  // a PXE ROM: vendor class "PXEClient…"
	KindHTTP Kind = "http" // UEFI HTTP boot: vendor class "HTTPClient…"
	KindIPXE Kind = "ipxe" // iPXE: user class "iPXE" or option 175
)

// Client is what Classify learns about the software that sent a request.
type Client struct {
	Kind Kind
	// Arch is option 93's first entry, else the "Arch:xxxxx" field of the vendor class, else
	// ArchBIOS (PXE 2.1 ROMs predating RFC 4578 are BIOS ROMs).
	Arch Arch
	// HTTPS: an iPXE that says it can fetch over HTTPS (feature 175.20).
	HTTPS bool
}

// String names the client as logs, metrics and observations do: "ipxe", "bios-pxe",
// "uefi-pxe", "arm64-pxe", "uefi-http", "arm64-http", "dhcp", or "pxe-arch-N" and
// "http-arch-N" for architectures imaged does not boot.
func (c Client) String() string {
	switch c.Kind {
	case KindDHCP, KindIPXE:
		return string(c.Kind)
	case KindPXE:
		switch c.Arch {
		case ArchBIOS:
			return "bios-pxe"
		case ArchUEFIx64, ArchUEFIx64B:
			return "uefi-pxe"
		case ArchUEFIARM64:
			return "arm64-pxe"
		}
	case KindHTTP:
		switch c.Arch {
		case ArchHTTPx64:
			return "uefi-http"
		case ArchHTTPARM64:
			return "arm64-http"
		}
	}
	return string(c.Kind) + "-arch-" + strconv.Itoa(int(c.Arch))
}

// Option codes imaged reads or writes that dhcpv4 has no constant for.
const (
	optUserClass   = 77  // RFC 3004
	optClientArch  = 93  // RFC 4578 §2.1
	optClientNDI   = 94  // RFC 4578 §2.2
	optMachineID   = 97  // RFC 4578 §2.3: UUID/GUID, echoed in PXE replies
	optIPXEEncap   = 175 // iPXE's encapsulated options
	optIPXENoProxy = 176 // iPXE "no-pxedhcp", inside 175
	// iPXE src/include/ipxe/features.h: DHCP_EB_FEATURE_HTTPS 0x14, one of the feature
	// options (0x10-0x7f) iPXE puts inside 175 of its requests, {0x14, 1, <version>}, when it
	// was built with DOWNLOAD_PROTO_HTTPS.
	optIPXEFeatureHTTPS = 0x14
	optRelayInfo        = 82 // RFC 3046
	optVendorClass      = 60
	optVendorOpts       = 43
	optBootFile         = 67
	optClientID         = 61
	optServerID         = 54
	optRequestedIP      = 50
	optMessageType      = 53
	optHostname         = 12
)

// Classify tells what kind of netboot client sent p. It reads options 60, 77, 93 and 175 and
// never fails: anything it does not recognise is KindDHCP.
func Classify(p *dhcpv4.DHCPv4) Client {
	vendor := p.Options[optVendorClass]
	c := Client{Kind: KindDHCP, Arch: archOf(p.Options[optClientArch], vendor)}
	switch {
	case isIPXE(p):
		c.Kind = KindIPXE
		c.HTTPS = ipxeFeature(p.Options[optIPXEEncap], optIPXEFeatureHTTPS)
	case bytes.HasPrefix(vendor, []byte("PXEClient")):
		c.Kind = KindPXE
	case bytes.HasPrefix(vendor, []byte("HTTPClient")):
		// UEFI 2.x §24.7 (HTTP Boot): the client's vendor class is
		// "HTTPClient:Arch:xxxxx:UNDI:yyyzzz".
		c.Kind = KindHTTP
	}
	return c
}

// isIPXE reports whether p comes from iPXE: user class "iPXE" (as iPXE sends it, raw, or
// RFC 3004-encoded) or iPXE's encapsulated option 175. Pitfall P1: qemu's NIC option ROMs are
// iPXE, so even a blade's very first DHCP may already be iPXE's; and the ROM's iPXE and the
// chainloaded undionly.kpxe send identical packets, so this test is all that breaks the loop.
func isIPXE(p *dhcpv4.DHCPv4) bool {
	if _, ok := p.Options[optIPXEEncap]; ok {
		return true
	}
	uc := p.Options[optUserClass]
	if string(uc) == "iPXE" {
		return true
	}
	// RFC 3004 §2: a list of (length, data) instances.
	for len(uc) > 0 {
		n := int(uc[0])
		if n == 0 || n+1 > len(uc) {
			return false
		}
		if string(uc[1:1+n]) == "iPXE" {
			return true
		}
		uc = uc[1+n:]
	}
	return false
}

// ipxeFeature reports whether iPXE's encapsulated options (option 175: code, length, data, as
// RFC 2132 §2 lays out options; 0 pads, 255 ends) hold the feature option code.
func ipxeFeature(encap []byte, code byte) bool {
	for len(encap) > 0 {
		switch encap[0] {
		case 0:
			encap = encap[1:]
			continue
		case 255:
			return false
		}
		if len(encap) < 2 || int(encap[1])+2 > len(encap) {
			return false
		}
		if encap[0] == code {
			return true
		}
		encap = encap[2+int(encap[1]):]
	}
	return false
}

// archOf returns the first architecture of option 93 (a list of 16-bit types), falling back
// to the "Arch:xxxxx" field of a PXE/HTTP vendor class, then to BIOS.
func archOf(opt93, vendor []byte) Arch {
	if len(opt93) >= 2 {
		return Arch(binary.BigEndian.Uint16(opt93))
	}
	// PXE 2.1 §2.1: "PXEClient:Arch:xxxxx:UNDI:yyyzzz".
	if _, rest, ok := strings.Cut(string(vendor), ":Arch:"); ok && len(rest) >= 5 {
		if n, err := strconv.ParseUint(rest[:5], 10, 16); err == nil {
			return Arch(n)
		}
	}
	return ArchBIOS
}
