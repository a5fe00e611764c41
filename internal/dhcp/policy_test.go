package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// TestUnknownClients: by default an unknown MAC is reported and counted but not answered; the
// "lease" policy gives it an address without boot options.
func TestUnknownClients(t *testing.T) {
	mac := "52:54:00:aa:00:ff"
	pxeDiscover := firmware(t, mac, "PXEClient:Arch:00007:UNDI:003000", 7)
	for _, tt := range []struct {
		policy    UnknownPolicy
		wantReply bool
		wantDisp  string
	}{
		{"", false, DispositionUnknown},
		{UnknownIgnore, false, DispositionUnknown},
		{UnknownLease, true, DispositionOffer},
		{UnknownNetboot, true, DispositionOffer},
	} {
		t.Run(string(tt.policy), func(t *testing.T) {
			cn := newClientNet(t)
			cfg := serverConfig(cn, cn)
			cfg.Unknown = tt.policy
			lb := startLoopback(t, cfg, Deps{Inventory: inventory{}, Leases: newMemStore()})
			cn.send(t, pxeDiscover, lb.addr)
			lb.seen(t, mustMAC(t, mac), 1)
			wait := 100 * time.Millisecond // handled and not answered: nothing is on its way
			if tt.wantReply {
				wait = 5 * time.Second
			}
			reply := cn.expect(t, mustMAC(t, mac), wait)
			if (reply != nil) != tt.wantReply {
				t.Fatalf("reply = %v, want a reply: %v", reply, tt.wantReply)
			}
			if reply != nil {
				netboot := tt.policy == UnknownNetboot
				if got := reply.BootFileName != "" || reply.Options.Has(dhcpv4.OptionBootfileName); got != netboot {
					t.Errorf("boot file present = %v, want %v: %s", got, netboot, reply.Summary())
				}
				if !ip4(reply.YourIPAddr).IsValid() {
					t.Errorf("no address offered")
				}
			}
			obs := lb.obs.all()
			want := []Observation{{MAC: mustMAC(t, mac), Known: false, MsgType: "discover", Arch: 7, Client: "uefi-pxe",
				Vendor: "PXEClient:Arch:00007:UNDI:003000", Disposition: tt.wantDisp}}
			if diff := cmp.Diff(want, obs, cmpopts.IgnoreFields(Observation{}, "Time", "Addr", "BootFile")); diff != "" {
				t.Errorf("observations (-want +got):\n%s", diff)
			}
			if got := counter(t, lb.srv.m.unknown); got != 1 {
				t.Errorf("unknown counter = %v, want 1", got)
			}
			if got := counter(t, lb.srv.m.packets.WithLabelValues("discover", tt.wantDisp)); got != 1 {
				t.Errorf("packets{discover,%s} = %v, want 1", tt.wantDisp, got)
			}
		})
	}
}

// TestProxyMode runs proxy mode over sockets: it answers netboot clients with boot options and
// never an address, ignores other clients, and answers PXE REQUESTs on the boot-server port
// at their source port.
func TestProxyMode(t *testing.T) {
	cn := newClientNet(t)
	known := inventory{}
	for _, m := range []string{"52:54:00:99:00:11", "52:54:00:99:00:13", "52:54:00:99:00:15", "52:54:00:aa:00:07"} {
		known[m] = Host{ID: m, Netboot: true}
	}
	cfg := Config{Mode: ModeProxy, ClientPort: cn.port(), RelayPort: cn.port(), Boot: testBoot()}
	lb := startLoopback(t, cfg, Deps{Inventory: known})
	if lb.pxeAddr.Port() == 0 || lb.pxeAddr == lb.addr {
		t.Fatalf("proxy mode bound %v, want a second (boot-server) socket", lb.srv.Addrs())
	}
	var replies []*dhcpv4.DHCPv4
	for _, name := range []string{"uefi-pxe-discover.bin", "bios-ipxe-rom-discover.bin", "uefi-http-discover.bin"} {
		b := readPacket(t, name)
		req, _ := dhcpv4.FromBytes(b)
		cn.send(t, b, lb.addr)
		reply := cn.expect(t, req.ClientHWAddr, 5*time.Second)
		if reply == nil || reply.MessageType() != dhcpv4.MessageTypeOffer || reply.BootFileName == "" {
			t.Errorf("%s: got %v, want a proxy offer with a boot file", name, reply)
			continue
		}
		replies = append(replies, reply)
	}

	// A plain DHCP client, even a known one, is the real DHCP server's.
	plain := mustMAC(t, "52:54:00:aa:00:07")
	cn.send(t, firmware(t, plain.String(), "", -1), lb.addr)
	lb.seen(t, plain, 1)
	if got := cn.expect(t, plain, 100*time.Millisecond); got != nil {
		t.Errorf("proxy answered a plain DHCP client: %s", got.Summary())
	}

	// EDK2's REQUEST: ignored on port 67, answered on 4011 to the source port.
	b := readPacket(t, "uefi-pxe-request.bin")
	req, _ := dhcpv4.FromBytes(b)
	cn.send(t, b, lb.addr)
	lb.seen(t, req.ClientHWAddr, 2) // its DISCOVER above, and this
	if got := cn.expect(t, req.ClientHWAddr, 100*time.Millisecond); got != nil {
		t.Errorf("proxy answered a REQUEST on port 67: %s", got.Summary())
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteToUDPAddrPort(b, lb.pxeAddr); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer on the boot-server port: %v", err)
	}
	ack, err := dhcpv4.FromBytes(buf[:n])
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "ipxe.efi" {
		t.Fatalf("boot-server reply %v (%v), want an ACK for ipxe.efi", ack, err)
	}
	if from != lb.pxeAddr {
		t.Errorf("boot-server reply came from %v, want %v", from, lb.pxeAddr)
	}
	replies = append(replies, ack)

	for _, r := range replies {
		if ip4(r.YourIPAddr).IsValid() {
			t.Errorf("proxy reply sets yiaddr %v: %s", r.YourIPAddr, r.Summary())
		}
		if got := ip4(r.Options[optServerID]); got != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("option 54 = %v, want 127.0.0.1", got)
		}
		if !r.Options.Has(dhcpv4.OptionClassIdentifier) {
			t.Errorf("proxy reply without option 60: %s", r.Summary())
		}
	}
}

// TestMalformed feeds broken packets to the handler: each is dropped, counted once as
// malformed, never observed.
func TestMalformed(t *testing.T) {
	good := readPacket(t, "uefi-pxe-discover.bin")
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	optAt := func(b []byte, code byte) int { // offset of option code in good's options
		for i := 240; i < len(b); {
			switch b[i] {
			case 0:
				i++
				continue
			case code:
				return i
			case 255:
				return -1
			}
			i += 2 + int(b[i+1])
		}
		return -1
	}
	tests := map[string][]byte{
		"empty":            {},
		"header only":      good[:236],
		"truncated":        good[:len(good)/2],
		"no end option":    edit(func(b []byte) []byte { return b[:optAt(b, 255)] }),
		"oversized":        append(append([]byte(nil), good...), make([]byte, 1400)...),
		"bad magic cookie": edit(func(b []byte) []byte { b[236] = 0; return b }),
		"option length past end": edit(func(b []byte) []byte {
			i := optAt(b, 60)
			b[i+1] = 250
			return b[:i+10]
		}),
		"message type of length 2": edit(func(b []byte) []byte {
			i := optAt(b, 53)
			return append(append(b[:i:i], 53, 2, 1, 1), b[i+3:]...)
		}),
		"odd-length option 93": edit(func(b []byte) []byte {
			i := optAt(b, 93)
			return append(append(b[:i:i], 93, 3, 0, 7, 0), b[i+4:]...)
		}),
		"BOOTREPLY (dnsmasq's offer)":  readPacket(t, "dnsmasq-offer-ipxe.bin"),
		"BOOTREPLY (HTTPClient offer)": readPacket(t, "dnsmasq-offer-httpclient.bin"),
		"no MAC (hlen 0)":              edit(func(b []byte) []byte { b[2] = 0; return b }),
		"not Ethernet (htype 6)":       edit(func(b []byte) []byte { b[1] = 6; return b }),
		"zero MAC":                     edit(func(b []byte) []byte { copy(b[28:34], make([]byte, 6)); return b }),
		"multicast MAC":                edit(func(b []byte) []byte { b[28] |= 1; return b }),
		"random":                       []byte(strings.Repeat("\xde\xad\xbe\xef", 100)),
	}
	for _, mode := range []Mode{ModeServer, ModeProxy} {
		for name, b := range tests {
			t.Run(string(mode)+"/"+name, func(t *testing.T) {
				obs := &observations{}
				s, err := build(Config{Mode: mode, Interface: "x", ServerIP: netip.MustParseAddr("10.99.0.1"),
					Subnet: netip.MustParsePrefix("10.99.0.0/24"), PoolStart: netip.MustParseAddr("10.99.0.100"),
					PoolEnd: netip.MustParseAddr("10.99.0.200"), Boot: testBoot(), Unknown: UnknownNetboot},
					Deps{Leases: newMemStore(), Observer: obs, Registerer: prometheus.NewRegistry()})
				if err != nil {
					t.Fatal(err)
				}
				for _, pxe := range []bool{false, true} {
					if reply, _ := s.process(b, netip.MustParseAddrPort("10.99.0.2:68"), pxe); reply != nil {
						t.Errorf("replied to a malformed packet: %s", reply.Summary())
					}
				}
				if got := counter(t, s.m.packets.WithLabelValues("none", DispositionMalformed)); got != 2 {
					t.Errorf("malformed counter = %v, want 2", got)
				}
				if n := len(obs.all()); n != 0 {
					t.Errorf("observer called %d times for malformed packets", n)
				}
			})
		}
	}
	// The unbroken packet does get an answer, so the cases above fail for their own reasons.
	s := testServer(t, ModeServer, testBoot(), inventory{"52:54:00:99:00:13": {Netboot: true}})
	if reply, _ := s.process(good, netip.MustParseAddrPort("10.99.0.2:68"), false); reply == nil {
		t.Fatal("the good packet got no reply")
	}
}

func TestNewErrors(t *testing.T) {
	base := Config{Mode: ModeServer, Interface: "lo", ServerIP: netip.MustParseAddr("127.0.0.1"),
		Subnet: loSubnet, ListenAddr: "127.0.0.1:0"}
	for name, tt := range map[string]struct {
		edit func(*Config)
		deps Deps
		want string
	}{
		"no mode":             {func(c *Config) { c.Mode = "" }, Deps{}, "mode is required"},
		"bad mode":            {func(c *Config) { c.Mode = "relay" }, Deps{}, "unknown mode"},
		"no interface":        {func(c *Config) { c.Interface = "" }, Deps{}, "interface is required"},
		"no server IP":        {func(c *Config) { c.ServerIP = netip.Addr{} }, Deps{}, "not an IPv4"},
		"server IP v6":        {func(c *Config) { c.ServerIP = netip.MustParseAddr("::1") }, Deps{}, "not an IPv4"},
		"no lease store":      {func(c *Config) {}, Deps{}, "needs a lease store"},
		"no subnet":           {func(c *Config) { c.Subnet = netip.Prefix{} }, Deps{Leases: newMemStore()}, "subnet"},
		"server outside":      {func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/8") }, Deps{Leases: newMemStore()}, "outside subnet"},
		"half a pool":         {func(c *Config) { c.PoolStart = loPoolFrom }, Deps{Leases: newMemStore()}, "both a start and an end"},
		"pool outside":        {func(c *Config) { c.PoolStart, c.PoolEnd = loPoolFrom, netip.MustParseAddr("127.0.1.5") }, Deps{Leases: newMemStore()}, "not inside subnet"},
		"pool backwards":      {func(c *Config) { c.PoolStart, c.PoolEnd = loPoolTo, loPoolFrom }, Deps{Leases: newMemStore()}, "before pool start"},
		"bad policy":          {func(c *Config) { c.Unknown = "maybe" }, Deps{Leases: newMemStore()}, "unknown-client policy"},
		"bad HTTP base":       {func(c *Config) { c.Boot.HTTPBase = &url.URL{Path: "boot"} }, Deps{Leases: newMemStore()}, "HTTP base"},
		"no such interface":   {func(c *Config) { c.Interface = "nosuch0" }, Deps{Leases: newMemStore()}, `interface "nosuch0"`},
		"IP not on interface": {func(c *Config) { c.ServerIP = netip.MustParseAddr("127.0.0.9") }, Deps{Leases: newMemStore()}, "not an address of interface lo"},
		"bad listen address":  {func(c *Config) { c.ListenAddr = "127.0.0.1:99999" }, Deps{Leases: newMemStore()}, "listen"},
		"leases fail to load": {func(c *Config) {}, Deps{Leases: &failingStore{}}, "load leases"},
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			s, err := New(c, tt.deps)
			if err == nil {
				s.close()
				t.Fatalf("New succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

type failingStore struct{ memStore }

func (*failingStore) Leases() ([]Lease, error) { return nil, errors.New("disk on fire") }

// TestRunStops: Run returns nil once its context is done, in every mode.
func TestRunStops(t *testing.T) {
	for _, mode := range []Mode{ModeOff, ModeServer, ModeProxy} {
		t.Run(string(mode), func(t *testing.T) {
			s, err := New(Config{Mode: mode, Interface: "lo", ServerIP: netip.MustParseAddr("127.0.0.1"),
				Subnet: loSubnet, ListenAddr: "127.0.0.1:0", ProxyListenAddr: "127.0.0.1:0"},
				Deps{Leases: newMemStore()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			select {
			case err := <-done:
				t.Fatalf("Run returned early: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Run did not return")
			}
		})
	}
}
