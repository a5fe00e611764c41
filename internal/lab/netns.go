// Package lab is imaged's virtual chassis on one Linux host: network namespaces joined by a
// bridge, QEMU blades (TCG) whose serial consoles are captured with timestamps, and the demo that
// netboots one of them from an `imaged serve` running in its own namespace.
//
// Nothing here touches the host's own interfaces: every link is created inside namespaces that
// the lab made itself, and DHCP, TFTP and broadcasts stay there.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Network is a pair of namespaces: Srv holds imaged on SrvIf (SrvIP, and fd99::1/64 for router
// advertisements); Cli holds a bridge with the address CliIP to which VM taps and client links
// attach.
type Network struct {
	Prefix       string // namespace names are Prefix-srv and Prefix-cli
	SrvIP, CliIP string
	Bits         int
	links        int
	extra        []string // namespaces added by AddClient
}

// Names of the pieces of a Network.
func (n *Network) Srv() string   { return n.Prefix + "-srv" }
func (n *Network) Cli() string   { return n.Prefix + "-cli" }
func (n *Network) SrvIf() string { return "veth-srv" }

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up creates the namespaces, the veth pair (each end born inside its namespace), the bridge and
// the addresses. On error it removes what it made.
func (n *Network) Up() (err error) {
	if n.Bits == 0 {
		n.Bits = 24
	}
	defer func() {
		if err != nil {
			n.Down()
		}
	}()
	cidr := func(a string) string { return fmt.Sprintf("%s/%d", a, n.Bits) }
	steps := [][]string{
		{"netns", "add", n.Srv()},
		{"netns", "add", n.Cli()},
		{"link", "add", "veth-srv", "netns", n.Srv(), "type", "veth", "peer", "name", "veth-cli", "netns", n.Cli()},
		{"-n", n.Srv(), "link", "set", "lo", "up"},
		{"-n", n.Srv(), "addr", "add", cidr(n.SrvIP), "dev", "veth-srv"},
		{"-n", n.Srv(), "addr", "add", "fd99::1/64", "dev", "veth-srv", "nodad"},
		{"-n", n.Srv(), "link", "set", "veth-srv", "up"},
		{"-n", n.Cli(), "link", "set", "lo", "up"},
		{"-n", n.Cli(), "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"-n", n.Cli(), "link", "set", "veth-cli", "master", "br0"},
		{"-n", n.Cli(), "addr", "add", cidr(n.CliIP), "dev", "br0"},
		{"-n", n.Cli(), "link", "set", "veth-cli", "up"},
		{"-n", n.Cli(), "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	return nil
}

// Down deletes the namespaces this Network made (and with them every link inside), nothing else.
func (n *Network) Down() {
	for _, ns := range append(n.extra, n.Cli(), n.Srv()) {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	n.extra = nil
}

// Exists reports whether the server namespace exists (a lab left over from an earlier run).
func (n *Network) Exists() bool {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && (f[0] == n.Srv() || f[0] == n.Cli()) {
			return true
		}
	}
	return false
}

// AddTap adds a tap device on the bridge for one QEMU VM and returns its name.
func (n *Network) AddTap() (string, error) {
	n.links++
	name := fmt.Sprintf("tap%d", n.links)
	for _, s := range [][]string{
		{"-n", n.Cli(), "tuntap", "add", "dev", name, "mode", "tap"},
		{"-n", n.Cli(), "link", "set", name, "master", "br0"},
		{"-n", n.Cli(), "link", "set", name, "up"},
	} {
		if err := ip(s...); err != nil {
			return "", fmt.Errorf("lab: %w", err)
		}
	}
	return name, nil
}

// AddHost creates one more namespace with a single interface on the bridge, named ifname, with
// the given MAC (may be empty) and address (CIDR; may be empty), for a client or a second server.
func (n *Network) AddHost(name, ifname, mac, cidr string) (ns string, err error) {
	n.links++
	ns = n.Prefix + "-" + name
	peer := fmt.Sprintf("hp%d", n.links)
	n.extra = append(n.extra, ns)
	args := []string{"link", "add", ifname, "netns", ns}
	if mac != "" {
		args = append(args, "address", mac)
	}
	args = append(args, "type", "veth", "peer", "name", peer, "netns", n.Cli())
	steps := [][]string{
		{"netns", "add", ns},
		args,
		{"-n", n.Cli(), "link", "set", peer, "master", "br0"},
		{"-n", n.Cli(), "link", "set", peer, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", ifname, "up"},
	}
	if cidr != "" {
		steps = append(steps, []string{"-n", ns, "addr", "add", cidr, "dev", ifname})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return "", fmt.Errorf("lab: %w", err)
		}
	}
	return ns, nil
}

// Command runs name inside namespace ns.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Dialer returns a DialContext that opens its sockets inside namespace ns, so that a process in
// the host's namespace can talk to a server in the lab (for instance the demo polling imaged's
// API) without any route between them.
func Dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := inNamespace(ns, func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			conn = c
			return err
		})
		return conn, err
	}
}

// inNamespace runs fn on a locked OS thread switched into ns. A socket created there stays in ns
// after the thread switches back.
func inNamespace(ns string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer unix.Close(self)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lab: namespace %s: %w", ns, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("lab: setns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the other namespace: keep it locked so the runtime discards it.
		runtime.LockOSThread()
		return errors.Join(ferr, fmt.Errorf("lab: cannot return from namespace %s: %w", ns, err))
	}
	return ferr
}
