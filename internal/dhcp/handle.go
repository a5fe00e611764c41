package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Reasons a packet is malformed.
var (
	errOversized  = fmt.Errorf("longer than %d bytes", maxPacketLen)
	errNotRequest = errors.New("not a BOOTREQUEST")
	errNoMAC      = errors.New("no Ethernet client MAC")
)

// decode parses one datagram and checks what the handlers rely on. dhcpv4.FromBytes already
// rejects a short header, a wrong magic cookie, an option running past the end and a missing
// End option.
func decode(b []byte) (*dhcpv4.DHCPv4, error) {
	if len(b) > maxPacketLen {
		return nil, errOversized
	}
	p, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, err
	}
	if p.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, errNotRequest
	}
	mac := p.ClientHWAddr
	if p.HWType != iana.HWTypeEthernet || len(mac) != 6 || mac[0]&1 != 0 ||
		string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return nil, errNoMAC
	}
	for _, f := range fixedLen {
		if v, ok := p.Options[f.code]; ok && len(v) != f.n {
			return nil, fmt.Errorf("option %d has length %d, want %d", f.code, len(v), f.n)
		}
	}
	if v, ok := p.Options[optClientArch]; ok && (len(v) == 0 || len(v)%2 != 0) {
		return nil, fmt.Errorf("option 93 has odd length %d", len(v))
	}
	return p, nil
}

// fixedLen are the fixed-length options we read (RFC 2132 §9.6, §9.1, §9.7, §9.10).
var fixedLen = []struct {
	code uint8
	n    int
}{{optMessageType, 1}, {optRequestedIP, 4}, {optServerID, 4}, {57, 2}}

// txn is one decoded request on its way through the handlers.
type txn struct {
	req     *dhcpv4.DHCPv4
	mac     net.HardwareAddr
	typ     dhcpv4.MessageType
	client  Client
	host    Host
	known   bool
	src     netip.AddrPort
	pxePort bool
	base    *slog.Logger
	lg      *slog.Logger
}

// log returns the transaction's logger, made on first use: most packets log nothing.
func (t *txn) log() *slog.Logger {
	if t.lg == nil {
		t.lg = t.base.With("mac", t.mac.String(), "xid", t.req.TransactionID.String(),
			"type", typeName(t.req), "client", t.client.String())
		if t.known {
			t.lg = t.lg.With("machine", t.host.ID)
		}
	}
	return t.lg
}

// logAt logs at lvl with the transaction's attributes; the logger carrying them is only
// built if lvl is enabled (the hot path logs nothing).
func (t *txn) logAt(lvl slog.Level, msg string, args ...any) {
	if ctx := context.Background(); t.base.Enabled(ctx, lvl) {
		t.log().Log(ctx, lvl, msg, args...)
	}
}

// result is what a handler decided.
type result struct {
	reply       *dhcpv4.DHCPv4
	dst         netip.AddrPort
	disposition string
	file        string
	addr        netip.Addr
	// write, if set, must succeed before reply is sent (a lease store write); done is told
	// how it went. On failure the reply is dropped and the disposition becomes "error".
	write func() error
	done  func(error)
	// what the Observer is told, completed with the disposition when the packet is done.
	obs Observation
}

func drop(disposition string) result { return result{disposition: disposition} }

// decide works out what to do with one datagram from src: the reply, where it goes, and the
// lease store write that must come first. It never panics on any input (FuzzHandlePacket).
// Malformed packets give ok=false: they are counted here and not observed.
func (s *Server) decide(b []byte, src netip.AddrPort, pxePort bool) (r result, ok bool) {
	req, err := decode(b)
	if err != nil {
		s.m.packet("none", DispositionMalformed)
		s.log.Debug("dropped malformed packet", "src", src, "len", len(b), "err", err)
		return result{}, false
	}
	t := &txn{req: req, mac: req.ClientHWAddr, typ: req.MessageType(), client: Classify(req),
		src: src, pxePort: pxePort, base: s.log}
	t.host, t.known = s.inv.Lookup(t.mac)

	switch s.cfg.Mode {
	case ModeServer:
		r = s.serverMode(t)
	case ModeProxy:
		r = s.proxyMode(t)
	}
	r.obs = Observation{
		Time: s.now(), MAC: t.mac, Known: t.known, MachineID: t.host.ID, MsgType: typeName(req),
		Arch: t.client.Arch, Client: t.client.String(), Vendor: string(req.Options[optVendorClass]),
		BootFile: r.file, Addr: r.addr,
	}
	return r, true
}

// complete runs r's store write, if any, then counts and reports the packet. It returns the
// reply to send, or nil.
func (s *Server) complete(r result) *dhcpv4.DHCPv4 {
	if r.write != nil {
		err := r.write()
		if r.done != nil {
			r.done(err)
		}
		if err != nil {
			r.reply, r.disposition, r.obs.Addr, r.obs.BootFile = nil, DispositionError, netip.Addr{}, ""
		}
	}
	s.m.packet(r.obs.MsgType, r.disposition)
	r.obs.Disposition = r.disposition
	s.obs.Observe(r.obs)
	return r.reply
}

// process is decide and complete in one go: the whole handling of one datagram.
func (s *Server) process(b []byte, src netip.AddrPort, pxePort bool) (*dhcpv4.DHCPv4, netip.AddrPort) {
	r, ok := s.decide(b, src, pxePort)
	if !ok {
		return nil, netip.AddrPort{}
	}
	return s.complete(r), r.dst
}

// admit applies the safe default: known MACs are answered (with boot options if the
// Inventory says Netboot); unknown ones are logged, counted and, unless Config.Unknown says
// otherwise, not answered.
func (s *Server) admit(t *txn) (answer, netboot bool) {
	if t.known {
		return true, t.host.Netboot
	}
	s.m.unknown.Inc()
	// Info once per MAC every few minutes (and a bounded number per minute in all, so a flood
	// of random MACs cannot flood the log), Debug otherwise.
	lvl := slog.LevelDebug
	if s.unknowns.allow(string(t.mac), s.now()) {
		lvl = slog.LevelInfo
	}
	t.logAt(lvl, "unknown client", "vendor", string(t.req.Options[optVendorClass]), "policy", s.cfg.Unknown)
	switch s.cfg.Unknown {
	case UnknownLease:
		return true, false
	case UnknownNetboot:
		return true, true
	}
	return false, false
}

// proxyMode answers netboot clients with boot options only (PXE 2.1 §2.2.2 proxyDHCP): an
// OFFER to a DISCOVER on port 67, an ACK to a REQUEST on the boot-server port 4011. It never
// sets yiaddr.
func (s *Server) proxyMode(t *txn) result {
	if t.client.Kind == KindDHCP {
		return drop(DispositionIgnored) // not a netboot client: the network's DHCP server answers it
	}
	var mt dhcpv4.MessageType
	switch {
	case !t.pxePort && t.typ == dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case t.pxePort && t.typ == dhcpv4.MessageTypeRequest:
		// PXE 2.1 §2.2.2: after its DHCP exchange the client may ask the proxy for its boot
		// file on port 4011 (EDK2 does for a "BINL" offer; iPXE does whenever it saw a proxy
		// offer); the reply goes back to its source address and port.
		mt = dhcpv4.MessageTypeAck
	default:
		return drop(DispositionIgnored)
	}
	answer, netboot := s.admit(t)
	if !answer || !netboot {
		if !t.known {
			return drop(DispositionUnknown)
		}
		t.logAt(slog.LevelDebug, "not booting: netboot is off for this machine")
		return drop(DispositionNoBoot)
	}
	d := s.cfg.Boot.Decide(t.client, t.mac)
	if d.File == "" {
		t.logAt(slog.LevelInfo, "not booting", "reason", d.Reason)
		return drop(DispositionNoBoot)
	}
	if d.VendorClass == "" {
		// iPXE takes an offer for a ProxyDHCP offer when it has option 60 "PXEClient" and no
		// yiaddr; PXE ROMs want option 43 with it.
		d.VendorClass, d.PXEDiscovery = "PXEClient", true
	}
	reply := s.newReply(t, mt)
	d.apply(reply, t.req)
	t.logAt(slog.LevelInfo, "proxy boot offer", "file", d.File, "reply", typeName(reply))
	disp := DispositionOffer
	if mt == dhcpv4.MessageTypeAck {
		disp = DispositionAck
	}
	return result{reply: reply, dst: s.dest(t), disposition: disp, file: d.File}
}

// newReply starts a reply to t with the fields and options every reply carries.
func (s *Server) newReply(t *txn, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	req := t.req
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	r.Options[optMessageType] = []byte{byte(mt)}
	r.Options[optServerID] = s.cfg.ServerIP.AsSlice() // RFC 2131 Table 3: MUST in every reply
	// RFC 3046 §2.2: the server copies the relay agent information option into its reply.
	if v, ok := req.Options[optRelayInfo]; ok {
		r.Options[optRelayInfo] = v
	}
	// RFC 6842 §3: the server MUST echo the client identifier.
	if v, ok := req.Options[optClientID]; ok {
		r.Options[optClientID] = v
	}
	return r
}

// dest is where a reply to t goes (RFC 2131 §4.1).
func (s *Server) dest(t *txn) netip.AddrPort {
	if t.pxePort && t.src.Addr().IsValid() && !t.src.Addr().IsUnspecified() {
		return t.src // PXE boot server: back to the client's source address and port
	}
	// "If the 'giaddr' field in a DHCP message from a client is non-zero, the server sends any
	// return messages to the 'DHCP server' port on the BOOTP relay agent whose address appears
	// in 'giaddr'."
	if g := ip4(t.req.GatewayIPAddr); g.IsValid() {
		return netip.AddrPortFrom(g, uint16(s.cfg.RelayPort))
	}
	// "If the 'giaddr' field is zero and the 'ciaddr' field is nonzero, then the server unicasts
	// DHCPOFFER and DHCPACK messages to the address in 'ciaddr'."
	if c := ip4(t.req.ClientIPAddr); c.IsValid() {
		return netip.AddrPortFrom(c, uint16(s.cfg.ClientPort))
	}
	// Otherwise the RFC has us broadcast when the client set the broadcast bit, else unicast to
	// chaddr/yiaddr, which needs an ARP entry for an address the client does not answer for
	// yet. We always broadcast on the bound interface: every client accepts it.
	return netip.AddrPortFrom(s.bcast, uint16(s.cfg.ClientPort))
}

// ip4 returns ip as an IPv4 netip.Addr, or the zero Addr if it is not one or is 0.0.0.0.
func ip4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	if a = a.Unmap(); !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// optAddr returns a 4-byte address option (decode checked the lengths).
func optAddr(p *dhcpv4.DHCPv4, code uint8) netip.Addr {
	return ip4(net.IP(p.Options[code]))
}

var typeNames = map[dhcpv4.MessageType]string{
	dhcpv4.MessageTypeDiscover: "discover",
	dhcpv4.MessageTypeOffer:    "offer",
	dhcpv4.MessageTypeRequest:  "request",
	dhcpv4.MessageTypeDecline:  "decline",
	dhcpv4.MessageTypeAck:      "ack",
	dhcpv4.MessageTypeNak:      "nak",
	dhcpv4.MessageTypeRelease:  "release",
	dhcpv4.MessageTypeInform:   "inform",
}

// typeName names p's message type for logs and metric labels (a bounded set).
func typeName(p *dhcpv4.DHCPv4) string {
	v, ok := p.Options[optMessageType]
	if !ok || len(v) != 1 {
		return "bootp" // RFC 951 BOOTP: no option 53
	}
	if n, ok := typeNames[dhcpv4.MessageType(v[0])]; ok {
		return n
	}
	return "other"
}
