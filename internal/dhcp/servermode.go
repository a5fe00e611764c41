package dhcp

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// serverMode is the authoritative server of RFC 2131 §4.3 for Config.Subnet.
func (s *Server) serverMode(t *txn) result {
	if t.pxePort {
		return drop(DispositionIgnored) // server mode does not listen there; be safe anyway
	}
	// RFC 2131 §4.3.1: a relayed request is for the subnet of giaddr. We serve only ours.
	if g := ip4(t.req.GatewayIPAddr); g.IsValid() && !s.cfg.Subnet.Contains(g) {
		t.logAt(slog.LevelDebug, "ignored: relayed from a foreign subnet", "giaddr", g)
		return drop(DispositionIgnored)
	}
	switch t.typ {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform:
	default:
		return drop(DispositionIgnored) // BOOTP, or a message type a client does not send
	}
	answer, netboot := s.admit(t)
	if !answer {
		return drop(DispositionUnknown)
	}
	switch t.typ {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(t, netboot)
	case dhcpv4.MessageTypeRequest:
		return s.request(t, netboot)
	case dhcpv4.MessageTypeRelease:
		return s.release(t)
	case dhcpv4.MessageTypeDecline:
		return s.decline(t)
	default:
		return s.inform(t)
	}
}

// reserved is t's reserved address, if the Inventory gave one.
func (t *txn) reserved() netip.Addr {
	if t.known {
		return t.host.Addr
	}
	return netip.Addr{}
}

// hostname is the name recorded with the lease: the Inventory's, else the client's option 12.
func (t *txn) hostname() string {
	if t.known && t.host.Hostname != "" {
		return t.host.Hostname
	}
	h := t.req.Options[optHostname]
	if len(h) > 63 {
		h = h[:63]
	}
	return string(h)
}

// discover answers DHCPDISCOVER with DHCPOFFER (RFC 2131 §4.3.1).
func (s *Server) discover(t *txn, netboot bool) result {
	a, err := s.table.offer(t.mac, t.reserved(), optAddr(t.req, optRequestedIP), s.now())
	if err != nil {
		t.logAt(slog.LevelWarn, "no address to offer", "err", err, "reserved", t.reserved())
		return drop(DispositionNoAddress)
	}
	reply := s.leaseReply(t, dhcpv4.MessageTypeOffer, a)
	file := s.bootOptions(t, reply, netboot)
	t.logAt(slog.LevelDebug, "offer", "addr", a, "file", file)
	return result{reply: reply, dst: s.dest(t), disposition: DispositionOffer, addr: a, file: file}
}

// request answers DHCPREQUEST with DHCPACK or DHCPNAK (RFC 2131 §4.3.2). The lease is durable
// in the LeaseStore before the ACK leaves.
func (s *Server) request(t *txn, netboot bool) result {
	sid := optAddr(t.req, optServerID)
	requested := optAddr(t.req, optRequestedIP)
	ciaddr := ip4(t.req.ClientIPAddr)
	var a netip.Addr
	var state string
	switch {
	case sid.IsValid():
		// SELECTING: "Client inserts the address of the selected server in 'server
		// identifier', 'ciaddr' MUST be zero, 'requested IP address' MUST be filled in".
		if sid != s.cfg.ServerIP {
			s.table.forget(t.mac) // it chose another server: our offer is free again
			return drop(DispositionIgnored)
		}
		a, state = requested, "selecting"
	case requested.IsValid():
		// INIT-REBOOT: "'server identifier' MUST NOT be filled in, 'requested IP address'
		// option MUST be filled in with client's notion of its previously assigned address.
		// 'ciaddr' MUST be zero."
		a, state = requested, "init-reboot"
	case ciaddr.IsValid():
		// RENEWING (unicast) or REBINDING (broadcast): "'server identifier' MUST NOT be filled
		// in, 'requested IP address' option MUST NOT be filled in, 'ciaddr' MUST be filled in".
		a, state = ciaddr, "renewing"
	}
	if !a.IsValid() {
		t.logAt(slog.LevelDebug, "ignored: REQUEST names no address")
		return drop(DispositionIgnored)
	}
	lease, ok := s.table.commit(t.mac, a, t.reserved(), t.hostname(), s.now())
	if !ok {
		// "If the client's 'requested IP address' is incorrect, or is on the wrong network, the
		// server SHOULD send DHCPNAK." We are authoritative for the subnet, so an address this
		// client may not have is incorrect (like Kea's "authoritative: true"): a NAK sends the
		// client back to DISCOVER at once instead of after its timeouts.
		t.logAt(slog.LevelInfo, "nak", "addr", a, "state", state)
		return s.nak(t, "requested address not available")
	}
	reply := s.leaseReply(t, dhcpv4.MessageTypeAck, a)
	reply.ClientIPAddr = t.req.ClientIPAddr // RFC 2131 Table 3: "'ciaddr' from DHCPREQUEST or 0"
	file := s.bootOptions(t, reply, netboot)
	return result{reply: reply, dst: s.dest(t), disposition: DispositionAck, addr: a, file: file,
		// The ACK leaves only once the lease is durable; if it cannot be stored there is no
		// ACK and the client retransmits.
		write: func() error { return s.store.PutLease(lease) },
		done: func(err error) {
			if err != nil {
				t.logAt(slog.LevelError, "persist lease", "addr", a, "err", err)
				return
			}
			t.logAt(slog.LevelInfo, "ack", "addr", a, "state", state, "file", file, "expiry", lease.Expiry)
		}}
}

// nak builds a DHCPNAK (RFC 2131 Table 3: no yiaddr, no lease options).
func (s *Server) nak(t *txn, msg string) result {
	reply := s.newReply(t, dhcpv4.MessageTypeNak)
	reply.Options[56] = []byte(msg)
	dst := netip.AddrPortFrom(s.bcast, uint16(s.cfg.ClientPort))
	if g := ip4(t.req.GatewayIPAddr); g.IsValid() {
		// §4.3.2: "If 'giaddr' is set in the DHCPREQUEST message, the client is on a different
		// subnet. The server MUST set the broadcast bit in the DHCPNAK, so that the relay agent
		// will broadcast the DHCPNAK to the client".
		reply.SetBroadcast()
		dst = netip.AddrPortFrom(g, uint16(s.cfg.RelayPort))
	}
	// §4.1: "In all cases, when 'giaddr' is zero, the server broadcasts any DHCPNAK messages to
	// 0xffffffff."
	return result{reply: reply, dst: dst, disposition: DispositionNak}
}

// release frees the lease named by ciaddr (RFC 2131 §4.3.4). No reply.
func (s *Server) release(t *txn) result {
	if sid := optAddr(t.req, optServerID); sid.IsValid() && sid != s.cfg.ServerIP {
		return drop(DispositionIgnored)
	}
	a := ip4(t.req.ClientIPAddr)
	if !a.IsValid() || !s.table.release(t.mac, a) {
		t.logAt(slog.LevelDebug, "ignored: RELEASE of an address the client does not hold", "addr", a)
		return drop(DispositionIgnored)
	}
	return result{disposition: DispositionRelease, addr: a,
		write: func() error { return s.store.DeleteLease(t.mac) },
		done: func(err error) {
			if err != nil {
				t.logAt(slog.LevelError, "delete released lease", "addr", a, "err", err)
				return
			}
			t.logAt(slog.LevelInfo, "released", "addr", a)
		}}
}

// decline takes the address of option 50 out of use for DeclineHold (RFC 2131 §4.3.3: the
// client found it in use). No reply.
func (s *Server) decline(t *txn) result {
	if sid := optAddr(t.req, optServerID); sid.IsValid() && sid != s.cfg.ServerIP {
		return drop(DispositionIgnored)
	}
	a := optAddr(t.req, optRequestedIP)
	lease, ok := s.table.decline(t.mac, a, s.now())
	if !ok {
		t.logAt(slog.LevelDebug, "ignored: DECLINE of an address the client does not hold", "addr", a)
		return drop(DispositionIgnored)
	}
	return result{disposition: DispositionDecline, addr: a,
		write: func() error { return s.store.PutLease(lease) },
		done: func(err error) {
			if err != nil {
				t.logAt(slog.LevelError, "persist declined address", "addr", a, "err", err)
				return
			}
			t.logAt(slog.LevelWarn, "address declined: in use on the network", "addr", a,
				"held_until", lease.Expiry)
		}}
}

// inform answers DHCPINFORM (RFC 2131 §4.3.5): "The server responds to a DHCPINFORM message by
// sending a DHCPACK message directly to the address given in the 'ciaddr' field ... The server
// MUST NOT send a lease expiration time to the client and SHOULD NOT fill in 'yiaddr'."
func (s *Server) inform(t *txn) result {
	if !ip4(t.req.ClientIPAddr).IsValid() {
		return drop(DispositionIgnored)
	}
	reply := s.newReply(t, dhcpv4.MessageTypeAck)
	reply.ClientIPAddr = t.req.ClientIPAddr
	s.netOptions(t, reply)
	return result{reply: reply, dst: s.dest(t), disposition: DispositionAck}
}

// leaseReply is an OFFER or ACK of address a with the network options and lease times.
func (s *Server) leaseReply(t *txn, mt dhcpv4.MessageType, a netip.Addr) *dhcpv4.DHCPv4 {
	reply := s.newReply(t, mt)
	reply.YourIPAddr = a.AsSlice()
	s.netOptions(t, reply)
	lt := s.cfg.LeaseTime
	reply.Options[51] = seconds(lt)
	// RFC 2131 §4.4.5: T1 defaults to 0.5 and T2 to 0.875 of the lease.
	reply.Options[58] = seconds(lt / 2)
	reply.Options[59] = seconds(lt * 7 / 8)
	return reply
}

// netOptions adds the subnet mask, router, DNS, domain name and host name.
func (s *Server) netOptions(t *txn, reply *dhcpv4.DHCPv4) {
	reply.Options[1] = net.CIDRMask(s.cfg.Subnet.Bits(), 32)
	if s.cfg.Router.IsValid() {
		reply.Options[3] = s.cfg.Router.AsSlice()
	}
	if len(s.cfg.DNS) > 0 {
		var b []byte
		for _, d := range s.cfg.DNS {
			b = append(b, d.AsSlice()...)
		}
		reply.Options[6] = b
	}
	if s.cfg.DomainName != "" {
		reply.Options[15] = []byte(s.cfg.DomainName)
	}
	if t.known && t.host.Hostname != "" {
		reply.Options[optHostname] = []byte(t.host.Hostname)
	}
}

// bootOptions adds what a netboot client should load and returns the file, or "" when the
// client is not booted (and logs why, for netboot clients).
func (s *Server) bootOptions(t *txn, reply *dhcpv4.DHCPv4, netboot bool) string {
	if !netboot || t.client.Kind == KindDHCP {
		return ""
	}
	d := s.cfg.Boot.Decide(t.client, t.mac)
	if d.File == "" {
		t.logAt(slog.LevelInfo, "not booting", "reason", d.Reason)
		return ""
	}
	d.apply(reply, t.req)
	return d.File
}

func seconds(d time.Duration) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(d/time.Second))
}
