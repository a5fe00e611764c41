//go:build !linux

package tftp

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// The server uses Linux socket options (IP_PKTINFO, SO_RCVTIMEO on blocking sockets); imaged runs
// on Linux. These stubs keep the package compiling elsewhere; New fails there.

type udpSock struct{}

var errTimeout = errors.New("timeout waiting for the client")

func dialUDP(netip.Addr, netip.AddrPort, int, time.Duration) (*udpSock, error) {
	return nil, errors.ErrUnsupported
}
func (u *udpSock) write([]byte) error                        { return errors.ErrUnsupported }
func (u *udpSock) read([]byte) (int, error)                  { return 0, errors.ErrUnsupported }
func (u *udpSock) setTimeout(time.Duration) error            { return errors.ErrUnsupported }
func (u *udpSock) interrupt()                                {}
func (u *udpSock) close()                                    {}
func sendOnce(netip.Addr, netip.AddrPort, int, []byte) error { return errors.ErrUnsupported }
func enablePktInfo(*net.UDPConn, bool) error                 { return errors.ErrUnsupported }
func parsePktInfo([]byte) (netip.Addr, int)                  { return netip.Addr{}, 0 }
func linkMTU(int) int                                        { return 0 }
