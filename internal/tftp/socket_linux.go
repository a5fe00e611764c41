package tftp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Each transfer gets its own socket, which is its TID (RFC 1350 §4: "each end of a connection
// chooses a TID for itself"). The socket is connected to the client's address and port, so the
// kernel drops packets from any other TID, and ICMP port-unreachable from a vanished client
// surfaces as ECONNREFUSED instead of a timeout.
//
// It is a plain blocking socket, outside Go's netpoller, on purpose. TFTP is lock-step: one
// datagram out, one ACK back, tens of µs apart on a LAN. Parking the goroutine in the netpoller
// for every ACK costs scheduler work each time: on the 2-core bench (bench/tftp) pin/tftp's server
// ran at 512-byte blocks at about a third of tftpd-hpa's speed, and a netpoller build of this
// server used about 1.4× the CPU per MiB of this one. A blocking read(2) with SO_RCVTIMEO costs
// one OS thread per transfer in flight, which Config.MaxTransfers bounds.
type udpSock struct {
	mu     sync.Mutex // guards fd against close while interrupt runs
	fd     int
	closed bool
}

var errTimeout = errors.New("timeout waiting for the client")

func dialUDP(local netip.Addr, remote netip.AddrPort, ifIndex int, timeout time.Duration) (*udpSock, error) {
	family := syscall.AF_INET
	if remote.Addr().Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	u := &udpSock{fd: fd}
	// Answer from the address the client sent its request to (it may be one of several on a
	// multi-homed appliance). A broadcast or multicast destination cannot be bound: let the
	// kernel pick the source then.
	if local.IsValid() && !local.IsUnspecified() && !local.IsMulticast() && local.Is4() == remote.Addr().Is4() {
		_ = syscall.Bind(fd, sockaddr(netip.AddrPortFrom(local, 0), ifIndex))
	}
	if err := syscall.Connect(fd, sockaddr(remote, ifIndex)); err != nil {
		u.close()
		return nil, fmt.Errorf("connect to %s: %w", remote, err)
	}
	if err := u.setTimeout(timeout); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

// setTimeout sets how long one read waits (SO_RCVTIMEO).
func (u *udpSock) setTimeout(d time.Duration) error {
	tv := syscall.NsecToTimeval(max(d, time.Microsecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(u.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set SO_RCVTIMEO: %w", err)
	}
	return nil
}

func sockaddr(ap netip.AddrPort, ifIndex int) syscall.Sockaddr {
	if a := ap.Addr(); a.Is4() {
		return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	sa := &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().IsLinkLocalUnicast() {
		sa.ZoneId = uint32(ifIndex)
	}
	return sa
}

func (u *udpSock) write(b []byte) error {
	for {
		_, err := syscall.Write(u.fd, b)
		if err != syscall.EINTR {
			return err
		}
	}
}

// read blocks for one datagram or until SO_RCVTIMEO passes (errTimeout). After interrupt it
// returns 0 bytes at once.
func (u *udpSock) read(b []byte) (int, error) {
	for {
		n, err := syscall.Read(u.fd, b)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, errTimeout
		}
		return 0, err
	}
}

// interrupt wakes a read blocked on the socket (shutdown(2) of the read side); writes still work,
// so the transfer can tell the client why it stops.
func (u *udpSock) interrupt() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.closed {
		_ = syscall.Shutdown(u.fd, syscall.SHUT_RD)
	}
}

func (u *udpSock) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.closed {
		u.closed = true
		_ = syscall.Close(u.fd)
	}
}

// sendOnce sends one packet from a fresh TID and closes it: the ERROR answer to a request that
// starts no transfer.
func sendOnce(local netip.Addr, remote netip.AddrPort, ifIndex int, pkt []byte) error {
	u, err := dialUDP(local, remote, ifIndex, time.Second)
	if err != nil {
		return err
	}
	defer u.close()
	return u.write(pkt)
}

// enablePktInfo asks the kernel for each request's destination address and interface (IP_PKTINFO,
// IPV6_RECVPKTINFO): the transfer answers from that address, and the interface's MTU bounds blksize.
// On a dual-stack socket IPv4 requests carry IP_PKTINFO, so both are set.
func enablePktInfo(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
		if v6 {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// parsePktInfo returns the destination address and interface index from a request's control
// messages; both are zero when absent.
func parsePktInfo(oob []byte) (dst netip.Addr, ifIndex int) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, 0
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(pi.Addr), int(pi.Ifindex)
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap(), int(pi.Ifindex)
		}
	}
	return netip.Addr{}, 0
}

// linkMTU returns the MTU of interface ifIndex, or 0 when unknown.
func linkMTU(ifIndex int) int {
	if ifIndex <= 0 {
		return 0
	}
	ifi, err := net.InterfaceByIndex(ifIndex)
	if err != nil {
		return 0
	}
	return ifi.MTU
}
