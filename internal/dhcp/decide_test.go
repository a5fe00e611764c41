package dhcp

import (
	"encoding/hex"
	"net"
	"net/netip"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Golden packets in testdata/ were captured from real firmware in the lab (see
// testdata/README.md); the constructed ones mimic firmware not captured there.

var (
	macUnknown  = "52:54:00:aa:00:ff"
	macNoBoot   = "52:54:00:aa:00:fe"
	testUUID    = []byte{0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01}
	testHTTP, _ = url.Parse("http://10.99.0.1:8080")
)

// firmware builds a DISCOVER (or, with dhcpv4.WithMessageType, another message) as a
// netboot ROM would send it.
func firmware(t testing.TB, mac, vendor string, arch int, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	ms := []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 0}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, testUUID)}
	if vendor != "" {
		ms = append(ms, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)))
	}
	if arch >= 0 {
		ms = append(ms, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.Arch(arch))))
	}
	p, err := dhcpv4.NewDiscovery(mustMAC(t, mac), append(ms, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p.ToBytes()
}

func testBoot() Boot {
	return Boot{
		TFTPServer:  netip.MustParseAddr("10.99.0.1"),
		BIOSFile:    "undionly.kpxe",
		UEFIx64File: "ipxe.efi",
		HTTPBase:    testHTTP,
		ScriptURL:   func(mac net.HardwareAddr) string { return "http://10.99.0.1:8080/boot/" + mac.String() + ".ipxe" },
	}
}

// view is the part of a reply the decisions are about.
type view struct {
	Type, YourIP, NextServer, File, Opt67, Opt60, Opt43, Opt175, Opt54 string
	Opt97Echoed                                                        bool
}

func viewOf(reply, req *dhcpv4.DHCPv4) view {
	if reply == nil {
		return view{Type: "none"}
	}
	ip := func(b net.IP) string {
		if a := ip4(b); a.IsValid() {
			return a.String()
		}
		return ""
	}
	v := view{
		Type: typeName(reply), YourIP: ip(reply.YourIPAddr), NextServer: ip(reply.ServerIPAddr),
		File: reply.BootFileName, Opt67: string(reply.Options[optBootFile]), Opt60: string(reply.Options[optVendorClass]),
		Opt43: hex.EncodeToString(reply.Options[optVendorOpts]), Opt175: hex.EncodeToString(reply.Options[optIPXEEncap]),
		Opt54: ip(reply.Options[optServerID]),
	}
	if id, ok := req.Options[optMachineID]; ok {
		v.Opt97Echoed = string(reply.Options[optMachineID]) == string(id)
	}
	return v
}

func TestDecisions(t *testing.T) {
	script := func(mac string) string { return "http://10.99.0.1:8080/boot/" + mac + ".ipxe" }
	// What each kind of client is told, on top of the type, address and option 54.
	ipxe := func(mac string) view {
		return view{NextServer: "10.99.0.1", File: script(mac), Opt67: script(mac), Opt175: "b00101", Opt97Echoed: true}
	}
	pxe := func(file string) view {
		return view{NextServer: "10.99.0.1", File: file, Opt67: file, Opt60: "PXEClient", Opt43: "060108ff", Opt97Echoed: true}
	}
	http := func(file string) view {
		u := "http://10.99.0.1:8080/boot/assets/" + file
		return view{NextServer: "10.99.0.1", File: u, Opt67: u, Opt60: "HTTPClient", Opt97Echoed: true}
	}
	noBoot := view{Opt97Echoed: false}
	with := func(v view, typ, yiaddr string) view {
		v.Type, v.YourIP, v.Opt54 = typ, yiaddr, "10.99.0.1"
		return v
	}
	arm64 := testBoot()
	arm64.ARM64File = "snp-arm64.efi"
	noScript := testBoot()
	noScript.ScriptURL = nil

	tests := []struct {
		name    string
		mode    Mode
		packet  func(t testing.TB) []byte
		pxePort bool
		boot    *Boot
		client  string
		want    view
	}{
		// Server mode: golden packets.
		{"server/seabios qemu iPXE ROM discover", ModeServer, file("bios-ipxe-rom-discover.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:11"), "offer", "10.99.0.100")},
		{"server/seabios qemu iPXE ROM request", ModeServer, file("bios-ipxe-rom-request.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:11"), "ack", "10.99.0.184")},
		{"server/e1000 iPXE ROM discover", ModeServer, file("bios-e1000-ipxe-rom-discover.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:12"), "offer", "10.99.0.100")},
		{"server/chainloaded undionly.kpxe gets the script, not undionly again", ModeServer, file("undionly-discover.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:14"), "offer", "10.99.0.100")},
		{"server/undionly request", ModeServer, file("undionly-request.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:14"), "ack", "10.99.0.187")},
		{"server/ipxe.efi gets the script, not ipxe.efi again", ModeServer, file("uefi-ipxe-efi-discover.bin"), false, nil,
			"ipxe", with(ipxe("52:54:00:99:00:13"), "offer", "10.99.0.100")},
		{"server/OVMF EDK2 PXE discover", ModeServer, file("uefi-pxe-discover.bin"), false, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "offer", "10.99.0.100")},
		{"server/OVMF EDK2 PXE request", ModeServer, file("uefi-pxe-request.bin"), false, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "ack", "10.99.0.186")},
		{"server/OVMF UEFI HTTP boot discover", ModeServer, file("uefi-http-discover.bin"), false, nil,
			"uefi-http", with(http("ipxe.efi"), "offer", "10.99.0.100")},
		{"server/OVMF UEFI HTTP boot request", ModeServer, file("uefi-http-request.bin"), false, nil,
			"uefi-http", with(http("ipxe.efi"), "ack", "10.99.0.188")},
		// Server mode: constructed packets.
		{"server/SeaBIOS PXE ROM (not iPXE)", ModeServer, built("52:54:00:aa:00:01", "PXEClient:Arch:00000:UNDI:002001", 0), false, nil,
			"bios-pxe", with(pxe("undionly.kpxe"), "offer", "10.99.0.100")},
		{"server/arch 9 is x64 too", ModeServer, built("52:54:00:aa:00:02", "PXEClient:Arch:00009:UNDI:003000", 9), false, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "offer", "10.99.0.100")},
		{"server/arch from the vendor class when option 93 is missing", ModeServer, built("52:54:00:aa:00:03", "PXEClient:Arch:00007:UNDI:003000", -1), false, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "offer", "10.99.0.100")},
		{"server/arm64 PXE not configured: address, no boot", ModeServer, built("52:54:00:aa:00:04", "PXEClient:Arch:00011:UNDI:003000", 11), false, nil,
			"arm64-pxe", with(noBoot, "offer", "10.99.0.100")},
		{"server/arm64 PXE configured", ModeServer, built("52:54:00:aa:00:04", "PXEClient:Arch:00011:UNDI:003000", 11), false, &arm64,
			"arm64-pxe", with(pxe("snp-arm64.efi"), "offer", "10.99.0.100")},
		{"server/arm64 HTTP boot configured", ModeServer, built("52:54:00:aa:00:05", "HTTPClient:Arch:00019:UNDI:003000", 19), false, &arm64,
			"arm64-http", with(http("snp-arm64.efi"), "offer", "10.99.0.100")},
		{"server/ia32 UEFI not supported", ModeServer, built("52:54:00:aa:00:06", "PXEClient:Arch:00006:UNDI:003000", 6), false, nil,
			"pxe-arch-6", with(noBoot, "offer", "10.99.0.100")},
		{"server/plain DHCP client", ModeServer, built("52:54:00:aa:00:07", "", -1), false, nil,
			"dhcp", with(noBoot, "offer", "10.99.0.100")},
		{"server/iPXE known by option 175 alone", ModeServer,
			built("52:54:00:aa:00:08", "PXEClient:Arch:00000:UNDI:002001", 0, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{177, 5, 1, 0, 0, 0, 0})), false, nil,
			"ipxe", with(ipxe("52:54:00:aa:00:08"), "offer", "10.99.0.100")},
		{"server/iPXE user class RFC 3004-encoded", ModeServer,
			built("52:54:00:aa:00:09", "PXEClient:Arch:00007:UNDI:003010", 7, dhcpv4.WithUserClass("iPXE", true)), false, nil,
			"ipxe", with(ipxe("52:54:00:aa:00:09"), "offer", "10.99.0.100")},
		{"server/iPXE without a script URL gets no NBP either", ModeServer, file("undionly-discover.bin"), false, &noScript,
			"ipxe", with(noBoot, "offer", "10.99.0.100")},
		{"server/known machine with netboot off", ModeServer, built(macNoBoot, "PXEClient:Arch:00007:UNDI:003000", 7), false, nil,
			"uefi-pxe", with(noBoot, "offer", "10.99.0.100")},
		{"server/unknown MAC is not answered", ModeServer, built(macUnknown, "PXEClient:Arch:00007:UNDI:003000", 7), false, nil,
			"uefi-pxe", view{Type: "none"}},

		// Proxy mode: boot options only, never an address.
		{"proxy/OVMF EDK2 PXE discover", ModeProxy, file("uefi-pxe-discover.bin"), false, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "offer", "")},
		{"proxy/EDK2 request on port 67 is the DHCP server's business", ModeProxy, file("uefi-pxe-request.bin"), false, nil,
			"uefi-pxe", view{Type: "none"}},
		{"proxy/EDK2 request on the boot-server port 4011", ModeProxy, file("uefi-pxe-request.bin"), true, nil,
			"uefi-pxe", with(pxe("ipxe.efi"), "ack", "")},
		{"proxy/iPXE ROM discover", ModeProxy, file("bios-ipxe-rom-discover.bin"), false, nil,
			"ipxe", func() view {
				v := with(ipxe("52:54:00:99:00:11"), "offer", "")
				v.Opt60, v.Opt43 = "PXEClient", "060108ff"
				return v
			}()},
		{"proxy/UEFI HTTP boot discover", ModeProxy, file("uefi-http-discover.bin"), false, nil,
			"uefi-http", with(http("ipxe.efi"), "offer", "")},
		{"proxy/SeaBIOS PXE ROM", ModeProxy, built("52:54:00:aa:00:01", "PXEClient:Arch:00000:UNDI:002001", 0), false, nil,
			"bios-pxe", with(pxe("undionly.kpxe"), "offer", "")},
		{"proxy/plain DHCP client is ignored", ModeProxy, built("52:54:00:aa:00:07", "", -1), false, nil,
			"dhcp", view{Type: "none"}},
		{"proxy/arm64 not configured is not answered", ModeProxy, built("52:54:00:aa:00:04", "PXEClient:Arch:00011:UNDI:003000", 11), false, nil,
			"arm64-pxe", view{Type: "none"}},
		{"proxy/unknown MAC is not answered", ModeProxy, built(macUnknown, "PXEClient:Arch:00007:UNDI:003000", 7), false, nil,
			"uefi-pxe", view{Type: "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.packet(t)
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			if got := Classify(req).String(); got != tt.client {
				t.Errorf("Classify = %q, want %q", got, tt.client)
			}
			boot := testBoot()
			if tt.boot != nil {
				boot = *tt.boot
			}
			inv := inventory{}
			for _, m := range []string{"52:54:00:99:00:11", "52:54:00:99:00:12", "52:54:00:99:00:13", "52:54:00:99:00:14",
				"52:54:00:99:00:15", "52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03", "52:54:00:aa:00:04",
				"52:54:00:aa:00:05", "52:54:00:aa:00:06", "52:54:00:aa:00:07", "52:54:00:aa:00:08", "52:54:00:aa:00:09"} {
				inv[m] = Host{ID: "m-" + m, Netboot: true}
			}
			inv[macNoBoot] = Host{ID: "noboot", Netboot: false}
			s := testServer(t, tt.mode, boot, inv)
			reply, _ := s.process(b, netip.MustParseAddrPort("10.99.0.2:68"), tt.pxePort)
			if diff := cmp.Diff(tt.want, viewOf(reply, req)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if reply != nil {
				// What we send must decode (and as a BOOTREPLY).
				wire := reply.ToBytes()
				back, err := dhcpv4.FromBytes(wire)
				if err != nil || back.OpCode != dhcpv4.OpcodeBootReply {
					t.Errorf("reply does not decode: %v", err)
				}
				// RFC 2131 §2: every client accepts 576-byte messages. Option 57 is no guide:
				// EDK2 says 65280 (testdata/uefi-pxe-request.bin).
				if len(wire) > 576 {
					t.Errorf("reply is %d bytes, more than the 576 every client must accept", len(wire))
				}
			}
		})
	}
}

func file(name string) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return readPacket(t, name) }
}

func built(mac, vendor string, arch int, mods ...dhcpv4.Modifier) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return firmware(t, mac, vendor, arch, mods...) }
}

// testServer is a Server without sockets for the lab's 10.99.0.0/24.
func testServer(t testing.TB, mode Mode, boot Boot, inv Inventory) *Server {
	t.Helper()
	s, err := build(Config{
		Mode: mode, Interface: "veth-srv", ServerIP: netip.MustParseAddr("10.99.0.1"),
		Subnet:    netip.MustParsePrefix("10.99.0.0/24"),
		PoolStart: netip.MustParseAddr("10.99.0.100"), PoolEnd: netip.MustParseAddr("10.99.0.200"),
		Boot: boot,
	}, Deps{Inventory: inv, Leases: newMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An iPXE that advertises HTTPS (feature 175.20) gets the https script URL when the server has
// one (its iPXE trusts the certificate); Debian's iPXE, captured in testdata, does not advertise
// it and keeps the plain one, and so does every iPXE when no HTTPS URL is configured.
func TestIPXEHTTPSFeature(t *testing.T) {
	b := testBoot()
	b.HTTPSScriptURL = func(mac net.HardwareAddr) string { return "https://10.99.0.1:8443/boot/" + mac.String() + ".ipxe" }
	// iPXE's features as it sends them: HTTP (0x13) and HTTPS (0x14), version 1 each, after a
	// pad; then the same without HTTPS.
	withHTTPS := dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{0, 0x13, 1, 1, 0x14, 1, 1, 0x24, 1, 1})
	without := dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{0x13, 1, 1, 0x15, 1, 1})
	truncated := dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{0x13, 5, 1, 0x14})
	for _, c := range []struct {
		name   string
		packet []byte
		boot   Boot
		want   string
	}{
		{"iPXE with HTTPS", firmware(t, "52:54:00:aa:00:21", "PXEClient:Arch:00000:UNDI:002001", 0, withHTTPS), b, "https://10.99.0.1:8443/boot/52:54:00:aa:00:21.ipxe"},
		{"iPXE with HTTPS, no https URL configured", firmware(t, "52:54:00:aa:00:21", "PXEClient:Arch:00000:UNDI:002001", 0, withHTTPS), testBoot(), "http://10.99.0.1:8080/boot/52:54:00:aa:00:21.ipxe"},
		{"iPXE without HTTPS", firmware(t, "52:54:00:aa:00:22", "PXEClient:Arch:00000:UNDI:002001", 0, without), b, "http://10.99.0.1:8080/boot/52:54:00:aa:00:22.ipxe"},
		{"truncated features", firmware(t, "52:54:00:aa:00:23", "", 0, truncated), b, "http://10.99.0.1:8080/boot/52:54:00:aa:00:23.ipxe"},
		{"Debian's iPXE ROM (golden)", readPacket(t, "bios-ipxe-rom-discover.bin"), b, "http://10.99.0.1:8080/boot/52:54:00:99:00:11.ipxe"},
		{"Debian's ipxe.efi (golden)", readPacket(t, "uefi-ipxe-efi-discover.bin"), b, "http://10.99.0.1:8080/boot/52:54:00:99:00:13.ipxe"},
	} {
		p, err := dhcpv4.FromBytes(c.packet)
		if err != nil {
			t.Fatal(err)
		}
		cl := Classify(p)
		if d := c.boot.Decide(cl, p.ClientHWAddr); cl.Kind != KindIPXE || d.File != c.want {
			t.Errorf("%s: %s client (https %v) gets %q, want %q", c.name, cl.Kind, cl.HTTPS, d.File, c.want)
		}
	}
}
