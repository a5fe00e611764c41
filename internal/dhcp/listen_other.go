//go:build !linux

package dhcp

import (
	"errors"
	"net"
)

// listen needs SO_BINDTODEVICE: imaged serves DHCP on Linux only.
func listen(ifname, addr string) (*net.UDPConn, error) {
	return nil, errors.New("dhcp: serving needs Linux (SO_BINDTODEVICE)")
}
