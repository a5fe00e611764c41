package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 150)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))),
		dhcpv4.WithLeaseTime(3600),
	}
	m, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip through the wire format, as a real ACK arrives.
	m, err = dhcpv4.FromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLeaseFromACK(t *testing.T) {
	def := netip.MustParsePrefix("0.0.0.0/0")
	for _, tc := range []struct {
		name   string
		ack    *dhcpv4.DHCPv4
		want   lease
		routes []route
	}{
		{
			name: "mask, router, DNS",
			ack: ack(t, dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(net.IPv4(10, 99, 0, 1), net.IPv4(10, 99, 0, 2)),
				dhcpv4.WithDNS(net.IPv4(10, 99, 0, 53))),
			want: lease{Addr: netip.MustParsePrefix("10.99.0.150/24"), Router: netip.MustParseAddr("10.99.0.1"),
				DNS: []netip.Addr{netip.MustParseAddr("10.99.0.53")}, ServerID: netip.MustParseAddr("10.99.0.1"), Duration: time.Hour},
			routes: []route{{Dst: def, Gateway: netip.MustParseAddr("10.99.0.1")}},
		},
		{
			name: "no mask: classful, no router: no routes",
			ack:  ack(t),
			want: lease{Addr: netip.MustParsePrefix("10.99.0.150/8"), ServerID: netip.MustParseAddr("10.99.0.1"), Duration: time.Hour, MaskGuessed: true},
		},
		{
			// RFC 3442: with option 121 present, option 3 is ignored; router 0.0.0.0 is on-link.
			name: "classless routes win over the router option",
			ack: ack(t, dhcpv4.WithNetmask(net.CIDRMask(16, 32)), dhcpv4.WithRouter(net.IPv4(10, 99, 0, 254)),
				dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
					&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(172, 16, 0, 0), Mask: net.CIDRMask(12, 32)}, Router: net.IPv4(0, 0, 0, 0)},
					&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(0, 0, 0, 0), Mask: net.CIDRMask(0, 32)}, Router: net.IPv4(10, 99, 0, 1)},
				))),
			want: lease{Addr: netip.MustParsePrefix("10.99.0.150/16"), Router: netip.MustParseAddr("10.99.0.254"),
				Classless: []route{
					{Dst: netip.MustParsePrefix("172.16.0.0/12")},
					{Dst: def, Gateway: netip.MustParseAddr("10.99.0.1")},
				},
				ServerID: netip.MustParseAddr("10.99.0.1"), Duration: time.Hour},
			routes: []route{{Dst: netip.MustParsePrefix("172.16.0.0/12")}, {Dst: def, Gateway: netip.MustParseAddr("10.99.0.1")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := leaseFromACK(tc.ack)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("lease (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.routes, got.routes(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := leaseFromACK(ack(t, dhcpv4.WithYourIP(net.IPv4zero))); err == nil {
		t.Error("an ACK without yiaddr gave a lease")
	}
}

func TestMasks(t *testing.T) {
	for bits, want := range map[int]string{0: "0.0.0.0", 8: "255.0.0.0", 20: "255.255.240.0", 32: "255.255.255.255"} {
		if got := prefixMask(bits).String(); got != want {
			t.Errorf("prefixMask(%d) = %s, want %s", bits, got, want)
		}
	}
	if got := broadcast(netip.MustParsePrefix("10.99.0.150/24")).String(); got != "10.99.0.255" {
		t.Errorf("broadcast = %s", got)
	}
	if got := broadcast(netip.MustParsePrefix("10.98.3.4/16")).String(); got != "10.98.255.255" {
		t.Errorf("broadcast = %s", got)
	}
}
