package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
)

// requestLease runs DISCOVER/OFFER/REQUEST/ACK on ifname until it gets a lease or
// cfg.DHCPTimeout passes. Each attempt sends up to cfg.DHCPAttemptRetry DISCOVERs (waiting 1, 2,
// 4 s…) then as many REQUESTs; between attempts the agent waits 1 s, doubling up to 8 s. A switch
// port running classic spanning tree forwards only after about 30 s, which this outlasts.
func requestLease(ctx context.Context, ifname string, mac net.HardwareAddr, cfg *Config, log *slog.Logger) (lease, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DHCPTimeout)
	defer cancel()
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		l, err := dhcpOnce(ctx, ifname, mac, cfg)
		if err == nil {
			return l, nil
		}
		log.Warn("DHCP attempt failed", "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return lease{}, fmt.Errorf("agent: DHCP on %s: no lease after %d attempts in %v: %w", ifname, attempt, cfg.DHCPTimeout, err)
		case <-t.C:
		}
		backoff = min(2*backoff, 8*time.Second)
	}
}

// dhcpOnce is one DISCOVER/OFFER/REQUEST/ACK exchange over nclient4's raw socket.
//
// The messages are built here rather than by nclient4.Client.Request because dhcpv4.New draws
// the transaction ID from u-root's rand, which spins on getrandom(GRND_NONBLOCK) until the
// kernel's CRNG is initialized, for up to 2 minutes. In an initramfs on a machine without RDRAND
// or virtio-rng (QEMU under TCG, with its default CPU) the CRNG is not ready that early, and the
// spinning starves the very interrupts that would seed it: the agent hung there. An xid only has
// to differ between clients (RFC 2131 §4.1), so the runtime's non-blocking generator is enough.
func dhcpOnce(ctx context.Context, ifname string, mac net.HardwareAddr, cfg *Config) (lease, error) {
	c, err := nclient4.New(ifname, nclient4.WithHWAddr(mac), nclient4.WithTimeout(time.Second), nclient4.WithRetry(cfg.DHCPAttemptRetry))
	if err != nil {
		return lease{}, err
	}
	defer c.Close()
	var xid dhcpv4.TransactionID
	binary.BigEndian.PutUint32(xid[:], rand.Uint32())
	common := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(cfg.vendorClass)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionBroadcastAddress, dhcpv4.OptionClasslessStaticRoute),
	}
	discover := message(xid, append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
	}, common...)...)
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), discover, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
	if err != nil {
		return lease{}, fmt.Errorf("no DHCPOFFER: %w", err)
	}
	// RFC 2131 §4.3.2, SELECTING: requested IP address and server identifier from the offer.
	request := message(xid, append([]dhcpv4.Modifier{
		dhcpv4.WithReply(offer),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOptionCopied(offer, dhcpv4.OptionServerIdentifier),
	}, common...)...)
	ack, err := c.SendAndRead(ctx, c.RemoteAddr(), request, nclient4.IsAll(
		nclient4.IsCorrectServer(offer.ServerIdentifier()),
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)))
	if err != nil {
		return lease{}, fmt.Errorf("no DHCPACK from %v for %v: %w", offer.ServerIdentifier(), offer.YourIPAddr, err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return lease{}, fmt.Errorf("DHCPNAK from %v for %v: %s", offer.ServerIdentifier(), offer.YourIPAddr, ack.Message())
	}
	return leaseFromACK(ack)
}

// message is dhcpv4.New without its random transaction ID.
func message(xid dhcpv4.TransactionID, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  make(net.HardwareAddr, 6),
		TransactionID: xid,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	for _, m := range mods {
		m(d)
	}
	return d
}
