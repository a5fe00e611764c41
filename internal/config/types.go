package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	"go.yaml.in/yaml/v3"
)

// The scalar types below decode one YAML scalar each and reject bad values with the line they
// stand on and the fix, so that an operator never has to guess what was wrong.

// Addr is an IP address.
type Addr struct{ netip.Addr }

func (a *Addr) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParseAddr(n.Value)
	if err != nil || v.Zone() != "" {
		return lineErr(n, "%q is not an IP address (write it like 10.99.0.1)", n.Value)
	}
	a.Addr = v
	return nil
}

// Prefix is an IP network in CIDR notation.
type Prefix struct{ netip.Prefix }

func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParsePrefix(n.Value)
	if err != nil {
		return lineErr(n, "%q is not a network in CIDR notation (write it like 10.99.0.0/24)", n.Value)
	}
	if v != v.Masked() {
		return lineErr(n, "%q has host bits set (the network is %s)", n.Value, v.Masked())
	}
	p.Prefix = v
	return nil
}

// MAC is an Ethernet hardware address.
type MAC struct{ net.HardwareAddr }

func (m *MAC) UnmarshalYAML(n *yaml.Node) error {
	v, err := net.ParseMAC(n.Value)
	if err != nil || len(v) != 6 {
		return lineErr(n, "%q is not an Ethernet MAC address (write it like 52:54:00:99:00:10)", n.Value)
	}
	m.HardwareAddr = v
	return nil
}

// Duration is a Go duration string such as 90s or 1h30m.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return lineErr(n, "%q is not a duration (write it like 30s, 5m or 1h)", n.Value)
	}
	d.Duration = v
	return nil
}

// URL is an absolute http or https URL.
type URL struct{ *url.URL }

func (u *URL) UnmarshalYAML(n *yaml.Node) error {
	v, err := url.Parse(n.Value)
	if err != nil || (v.Scheme != "http" && v.Scheme != "https") || v.Host == "" {
		return lineErr(n, "%q is not an absolute http(s) URL (write it like http://10.99.0.1:8080)", n.Value)
	}
	u.URL = v
	return nil
}

// AddrPort is a host:port listen address; the host may be empty (all addresses).
type AddrPort struct {
	Host string
	Port uint16
}

func (a *AddrPort) UnmarshalYAML(n *yaml.Node) error {
	host, port, err := net.SplitHostPort(n.Value)
	var p uint16
	if err == nil {
		_, err = fmt.Sscan(port, &p)
	}
	if err != nil {
		return lineErr(n, "%q is not a listen address (write it like 10.99.0.1:8080 or :8080)", n.Value)
	}
	if host != "" {
		if _, perr := netip.ParseAddr(host); perr != nil {
			return lineErr(n, "%q: the host part must be an IP address, not a name", n.Value)
		}
	}
	a.Host, a.Port = host, p
	return nil
}

func (a AddrPort) String() string { return net.JoinHostPort(a.Host, fmt.Sprint(a.Port)) }

// IsZero reports whether the address was left out of the file.
func (a AddrPort) IsZero() bool { return a.Host == "" && a.Port == 0 }

func lineErr(n *yaml.Node, format string, args ...any) error {
	return &Error{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}
