package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen opens a UDP socket on addr bound to the interface ifname.
//
// SO_BINDTODEVICE keeps us to the served interface even though we bind the wildcard address
// (clients without an address send from 0.0.0.0 to 255.255.255.255, which only a wildcard
// socket receives), and it makes our limited broadcasts (255.255.255.255) leave through that
// interface rather than the default route's. SO_REUSEADDR lets a proxyDHCP share port 67 with
// a DHCP server on the same host (dnsmasq sets it too under bind-interfaces); broadcasts reach
// every socket bound to the port.
func listen(ifname, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			// Bursts (a chassis powering on) should queue rather than drop. Best effort:
			// SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by net.core.rmem_max.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
			}
			if serr = unix.BindToDevice(s, ifname); serr != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
