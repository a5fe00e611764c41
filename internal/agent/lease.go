package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// lease is what the agent takes from a DHCPACK.
type lease struct {
	Addr        netip.Prefix // yiaddr with option 1's mask
	Router      netip.Addr   // first of option 3, if any
	Classless   []route      // option 121 (RFC 3442), if any
	DNS         []netip.Addr // option 6
	ServerID    netip.Addr   // option 54
	Duration    time.Duration
	MaskGuessed bool // the server sent no option 1; the mask is the classful default
}

// route is one IPv4 route; an invalid Gateway means on-link.
type route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
}

// routes are the routes to install. RFC 3442 §2: "If the DHCP server returns both a Classless
// Static Routes option and a Router option, the DHCP client MUST ignore the Router option."
func (l lease) routes() []route {
	if len(l.Classless) > 0 {
		return l.Classless
	}
	if l.Router.IsValid() {
		return []route{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: l.Router}}
	}
	return nil
}

// defaultGateway is the gateway of the lease's default route, if it has one (the last, as the
// agent has always reported it).
func (l lease) defaultGateway() netip.Addr {
	var gw netip.Addr
	for _, r := range l.routes() {
		if r.Dst.Bits() == 0 && r.Gateway.IsValid() {
			gw = r.Gateway
		}
	}
	return gw
}

// leaseFromACK reads a DHCPACK into a lease.
func leaseFromACK(ack *dhcpv4.DHCPv4) (lease, error) {
	if ack == nil {
		return lease{}, errors.New("no DHCPACK")
	}
	ip, ok := addr4(ack.YourIPAddr)
	if !ok || ip.IsUnspecified() {
		return lease{}, fmt.Errorf("DHCPACK from %s has no usable yiaddr (%v)", ack.ServerIPAddr, ack.YourIPAddr)
	}
	var l lease
	mask := ack.SubnetMask()
	if mask == nil {
		// RFC 2131 §4.3.1 asks servers to send option 1; fall back to the classful mask, which is
		// what SIOCSIFADDR alone would set.
		mask = net.IP(ip.AsSlice()).DefaultMask()
		l.MaskGuessed = true
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return lease{}, fmt.Errorf("DHCPACK has a non-contiguous subnet mask %s", net.IP(mask))
	}
	l.Addr = netip.PrefixFrom(ip, ones)
	for _, r := range ack.Router() {
		if a, ok := addr4(r); ok && !a.IsUnspecified() {
			l.Router = a
			break
		}
	}
	for _, r := range ack.ClasslessStaticRoute() {
		if r == nil || r.Dest == nil {
			continue
		}
		dst, ok := addr4(r.Dest.IP)
		ones, bits := r.Dest.Mask.Size()
		if !ok || bits != 32 {
			continue
		}
		rt := route{Dst: netip.PrefixFrom(dst, ones).Masked()}
		// RFC 3442 §3: a router address of 0.0.0.0 means the destination is on-link.
		if gw, ok := addr4(r.Router); ok && !gw.IsUnspecified() {
			rt.Gateway = gw
		}
		l.Classless = append(l.Classless, rt)
	}
	for _, d := range ack.DNS() {
		if a, ok := addr4(d); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	if s, ok := addr4(ack.ServerIdentifier()); ok {
		l.ServerID = s
	}
	l.Duration = ack.IPAddressLeaseTime(0)
	return l, nil
}

func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.Is4()
}

func prefixMask(bits int) netip.Addr {
	var b [4]byte
	for i := 0; i < bits && i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	m := prefixMask(p.Bits()).As4()
	for i := range a {
		a[i] |= ^m[i]
	}
	return netip.AddrFrom4(a)
}
