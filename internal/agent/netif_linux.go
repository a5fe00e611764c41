package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imaged/imaged/internal/atomicfile"
)

// Interface configuration uses the classic ioctls (SIOCSIFADDR, SIOCSIFFLAGS, SIOCADDRT) through
// x/sys/unix, as busybox ifconfig and route do: the kernel has had them forever, they need no
// netlink library in the initramfs, and IPv4 over one NIC needs nothing more.

// waitInterface polls until an interface with the given MAC exists (drivers register their
// netdev some time after the module loads) or the timeout passes.
func waitInterface(ctx context.Context, mac net.HardwareAddr, timeout time.Duration) (*net.Interface, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ifs, err := net.Interfaces()
		if err == nil {
			for i := range ifs {
				if bytes.Equal(ifs[i].HardwareAddr, mac) {
					return &ifs[i], nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent: no network interface has MAC %s after %v (present: %s): is its driver in the initrd?",
				mac, timeout, describeInterfaces())
		case <-tick.C:
		}
	}
}

func describeInterfaces() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			continue
		}
		parts = append(parts, i.Name+" "+i.HardwareAddr.String())
	}
	if len(parts) == 0 {
		return "none but loopback"
	}
	return strings.Join(parts, ", ")
}

// ifctl is a socket for interface ioctls.
type ifctl struct{ fd int }

func openIfctl() (*ifctl, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent: socket for interface ioctls: %w", err)
	}
	return &ifctl{fd: fd}, nil
}

func (c *ifctl) Close() error { return unix.Close(c.fd) }

func (c *ifctl) flags(name string) (uint16, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(c.fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	return ifr.Uint16(), nil
}

// up sets IFF_UP on the interface.
func (c *ifctl) up(name string) error {
	f, err := c.flags(name)
	if err != nil {
		return err
	}
	if f&unix.IFF_UP != 0 {
		return nil
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(f | unix.IFF_UP)
	if err := unix.IoctlIfreq(c.fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s up: %w", name, err)
	}
	return nil
}

// waitCarrier waits for IFF_RUNNING, which the kernel sets when the link has carrier (virtio at
// once; e1000 about 2 s after up; real NICs after autonegotiation, a few seconds).
func (c *ifctl) waitCarrier(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		f, err := c.flags(name)
		if err != nil {
			return err
		}
		if f&unix.IFF_RUNNING != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no carrier on %s after %v: is the cable or switch port up?", name, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// setAddr gives the interface its address, netmask and broadcast address. SIOCSIFADDR replaces
// the primary IPv4 address, so running this twice with the same lease is harmless.
func (c *ifctl) setAddr(name string, p netip.Prefix) error {
	set := func(req uint, what string, a netip.Addr) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		b := a.As4()
		if err := ifr.SetInet4Addr(b[:]); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(c.fd, req, ifr); err != nil {
			return fmt.Errorf("%s %s %s: %w", what, name, a, err)
		}
		return nil
	}
	if err := set(unix.SIOCSIFADDR, "SIOCSIFADDR", p.Addr()); err != nil {
		return err
	}
	if err := set(unix.SIOCSIFNETMASK, "SIOCSIFNETMASK", prefixMask(p.Bits())); err != nil {
		return err
	}
	return set(unix.SIOCSIFBRDADDR, "SIOCSIFBRDADDR", broadcast(p))
}

// rtentry is struct rtentry of <linux/route.h>. Its C layout (unsigned long, pointers, shorts)
// is what Go gives these field types on every Linux architecture.
type rtentry struct {
	pad1    uintptr
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     *byte
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

// addRoute adds an IPv4 route via gw (or on-link when gw is invalid) out of dev. A route that
// exists already is fine.
func (c *ifctl) addRoute(dev string, dst netip.Prefix, gw netip.Addr) error {
	sa := func(a netip.Addr) unix.RawSockaddrInet4 {
		return unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	}
	devb := append([]byte(dev), 0)
	rt := rtentry{
		dst:     sa(dst.Masked().Addr()),
		genmask: sa(prefixMask(dst.Bits())),
		flags:   unix.RTF_UP,
		dev:     &devb[0],
	}
	if dst.Bits() == 32 {
		rt.flags |= unix.RTF_HOST
	}
	if gw.IsValid() {
		rt.gateway = sa(gw)
		rt.flags |= unix.RTF_GATEWAY
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	runtime.KeepAlive(devb)
	switch errno {
	case 0, unix.EEXIST:
		return nil
	}
	what := "on-link"
	if gw.IsValid() {
		what = "via " + gw.String()
	}
	return fmt.Errorf("SIOCADDRT %s %s dev %s: %w", dst, what, dev, errno)
}

// installRoutes applies the lease's routes: option 121 when present, else a default route via
// option 3. A gateway outside the subnet (some servers do that) gets an on-link host route first.
func (c *ifctl) installRoutes(dev string, l lease) error {
	add := func(r route) error {
		err := c.addRoute(dev, r.Dst, r.Gateway)
		if errors.Is(err, unix.ENETUNREACH) && r.Gateway.IsValid() {
			if err := c.addRoute(dev, netip.PrefixFrom(r.Gateway, 32), netip.Addr{}); err != nil {
				return err
			}
			err = c.addRoute(dev, r.Dst, r.Gateway)
		}
		return err
	}
	for _, r := range l.routes() {
		if err := add(r); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	return nil
}

// writeResolvConf writes the lease's DNS servers (and nothing else) to path, atomically.
func writeResolvConf(path string, dns []netip.Addr) error {
	if path == "" || len(dns) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# written by the imaged agent from its DHCP lease\n")
	for _, a := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, []byte(b.String()), 0o644)
}
