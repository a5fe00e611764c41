package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"
)

// Mode says how the server takes part in the network's DHCP.
type Mode string

const (
	// ModeServer is authoritative for Subnet: it assigns addresses (reservations from the
	// Inventory plus an optional dynamic pool) and boot options.
	ModeServer Mode = "server"
	// ModeProxy is a proxyDHCP server (PXE spec 2.1 §2.2.2) beside an existing DHCP server: it
	// never assigns addresses and answers only netboot clients, with boot options.
	ModeProxy Mode = "proxy"
	// ModeOff binds nothing; Run just waits.
	ModeOff Mode = "off"
)

// UnknownPolicy says what is done with a client whose MAC is not in the Inventory.
type UnknownPolicy string

const (
	// UnknownIgnore (the default) logs, counts and reports unknown clients but never answers.
	UnknownIgnore UnknownPolicy = "ignore"
	// UnknownLease gives unknown clients an address from the pool, without boot options.
	UnknownLease UnknownPolicy = "lease"
	// UnknownNetboot treats unknown clients like known ones: address and boot options.
	UnknownNetboot UnknownPolicy = "netboot"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("dhcp: invalid config")

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	Mode Mode
	// Interface is the network interface served (SO_BINDTODEVICE). Required unless ModeOff.
	Interface string
	// ServerIP is our IPv4 address on Interface: option 54 (server identifier) and the default
	// next-server (siaddr).
	ServerIP netip.Addr
	// Subnet is the subnet we are authoritative for (ModeServer). Relayed requests are served
	// only when their giaddr is inside it.
	Subnet netip.Prefix
	// Router, DNS and DomainName are sent as options 3, 6 and 15 when set (ModeServer).
	Router     netip.Addr
	DNS        []netip.Addr
	DomainName string
	// PoolStart..PoolEnd (inclusive, inside Subnet) is the optional dynamic pool. Without it
	// only hosts with a reserved address get one. Keep reservations outside the pool: the
	// Inventory is asked by MAC only, so the pool cannot know which addresses are reserved.
	PoolStart, PoolEnd netip.Addr
	// LeaseTime is the lease length (default 1h).
	LeaseTime time.Duration
	// DeclineHold is how long an address declined by a client (RFC 2131 §4.3.3: the client
	// found it in use) is not handed out again (default 10m).
	DeclineHold time.Duration
	// Unknown is the policy for MACs the Inventory does not know (default UnknownIgnore).
	Unknown UnknownPolicy
	Boot    Boot

	// ListenAddr is where DHCP requests are read (default ":67").
	ListenAddr string
	// ProxyListenAddr is where ModeProxy also reads PXE boot-server requests (default ":4011").
	ProxyListenAddr string
	// ClientPort is the port replies to clients are sent to (default 68).
	ClientPort int
	// RelayPort is the port replies to relay agents (giaddr) are sent to (default 67).
	RelayPort int
	// Workers bounds the packets handled at once (default 128).
	Workers int
	// MaxPendingWrites bounds the lease writes in flight (default 1024). Writes run beside
	// the workers: the LeaseStore batches concurrent writes, so more pending writes means
	// bigger batches, not more fsyncs, and DISCOVERs are not held up behind commits.
	MaxPendingWrites int
}

// Boot says what netboot clients are told to load.
type Boot struct {
	// TFTPServer is the next-server (siaddr) for TFTP boot files (default ServerIP).
	TFTPServer netip.Addr
	// BIOSFile is the NBP for BIOS PXE ROMs (arch 0), e.g. "undionly.kpxe".
	BIOSFile string
	// UEFIx64File is the NBP for x64 UEFI PXE (arch 7, 9), e.g. "ipxe.efi" or "snponly.efi".
	// UEFI HTTP boot (arch 16) gets it from HTTPBase.
	UEFIx64File string
	// ARM64File is the NBP for arm64 UEFI (arch 11, or 19 over HTTP). Empty: arm64 is not booted.
	ARM64File string
	// HTTPBase is our HTTP server, e.g. http://10.99.0.1:8080. UEFI HTTP boot clients get
	// HTTPBase/boot/assets/<file>. Nil: UEFI HTTP boot is not answered with a file.
	HTTPBase *url.URL
	// ScriptURL returns the iPXE script URL for a machine. iPXE clients always get it (never
	// an NBP, so the chainload cannot loop). Nil: iPXE clients get no boot file.
	ScriptURL func(mac net.HardwareAddr) string
	// HTTPSScriptURL, when set, is the script URL for an iPXE that advertises HTTPS (feature
	// 175.20); set it only when the iPXE handed out trusts the server's certificate. Debian's
	// iPXE (1.0.0+git-20190125) is built without HTTPS and never advertises it.
	HTTPSScriptURL func(mac net.HardwareAddr) string
}

const (
	defaultLeaseTime   = time.Hour
	defaultDeclineHold = 10 * time.Minute
	defaultWorkers     = 128
	// defaultPendingWrites matches bbolt's default MaxBatchSize (1000): a full batch commits
	// without waiting for the batch timer.
	defaultPendingWrites = 1024
	// offerHold is how long an offered address stays set aside for the client it was
	// offered to while it makes up its mind (EDK2 collects offers for 4 s before choosing).
	offerHold = time.Minute
	// maxPoolSize bounds the memory the pool can take (a /12).
	maxPoolSize = 1 << 20
)

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch c.Mode {
	case ModeOff:
		return c, nil
	case ModeServer, ModeProxy:
	case "":
		return bad("mode is required (server, proxy or off)")
	default:
		return bad("unknown mode %q (want server, proxy or off)", c.Mode)
	}
	if c.Interface == "" {
		return bad("interface is required in %s mode", c.Mode)
	}
	if !c.ServerIP.Is4() {
		return bad("server IP %v is not an IPv4 address", c.ServerIP)
	}
	switch c.Unknown {
	case "":
		c.Unknown = UnknownIgnore
	case UnknownIgnore, UnknownLease, UnknownNetboot:
	default:
		return bad("unknown-client policy %q (want ignore, lease or netboot)", c.Unknown)
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":67"
	}
	if c.ProxyListenAddr == "" {
		c.ProxyListenAddr = ":4011"
	}
	if c.ClientPort == 0 {
		c.ClientPort = 68
	}
	if c.RelayPort == 0 {
		c.RelayPort = 67
	}
	if c.ClientPort < 0 || c.ClientPort > 65535 || c.RelayPort < 0 || c.RelayPort > 65535 {
		return bad("ports out of range: client %d, relay %d", c.ClientPort, c.RelayPort)
	}
	if c.Workers == 0 {
		c.Workers = defaultWorkers
	}
	if c.Workers < 1 || c.Workers > 4096 {
		return bad("workers %d out of range 1..4096", c.Workers)
	}
	if c.MaxPendingWrites == 0 {
		c.MaxPendingWrites = defaultPendingWrites
	}
	if c.MaxPendingWrites < 1 || c.MaxPendingWrites > 65536 {
		return bad("pending writes %d out of range 1..65536", c.MaxPendingWrites)
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = defaultLeaseTime
	}
	if c.LeaseTime < 10*time.Second || c.LeaseTime > 365*24*time.Hour {
		return bad("lease time %v out of range 10s..1y", c.LeaseTime)
	}
	if c.DeclineHold == 0 {
		c.DeclineHold = defaultDeclineHold
	}
	if c.DeclineHold < 0 {
		return bad("decline hold %v is negative", c.DeclineHold)
	}
	if !c.Boot.TFTPServer.IsValid() {
		c.Boot.TFTPServer = c.ServerIP
	}
	if !c.Boot.TFTPServer.Is4() {
		return bad("TFTP server %v is not an IPv4 address", c.Boot.TFTPServer)
	}
	if u := c.Boot.HTTPBase; u != nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
		return bad("HTTP base %q is not an absolute http(s) URL", u)
	}
	if c.Mode == ModeProxy {
		return c, nil
	}

	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		return bad("subnet %v is not an IPv4 prefix of /30 or larger", c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	if !c.Subnet.Contains(c.ServerIP) {
		return bad("server IP %v is outside subnet %v", c.ServerIP, c.Subnet)
	}
	if c.Router.IsValid() && !c.Router.Is4() {
		return bad("router %v is not an IPv4 address", c.Router)
	}
	for _, d := range c.DNS {
		if !d.Is4() {
			return bad("DNS server %v is not an IPv4 address", d)
		}
	}
	if len(c.DomainName) > 255 {
		return bad("domain name longer than 255 bytes")
	}
	switch {
	case !c.PoolStart.IsValid() && !c.PoolEnd.IsValid():
	case !c.PoolStart.IsValid() || !c.PoolEnd.IsValid():
		return bad("pool needs both a start and an end")
	case !c.Subnet.Contains(c.PoolStart) || !c.Subnet.Contains(c.PoolEnd):
		return bad("pool %v-%v is not inside subnet %v", c.PoolStart, c.PoolEnd, c.Subnet)
	case c.PoolEnd.Less(c.PoolStart):
		return bad("pool end %v is before pool start %v", c.PoolEnd, c.PoolStart)
	case u32(c.PoolEnd)-u32(c.PoolStart) >= maxPoolSize:
		return bad("pool %v-%v is larger than %d addresses", c.PoolStart, c.PoolEnd, maxPoolSize)
	}
	return c, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrFrom32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
