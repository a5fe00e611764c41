package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// fakeClock is a settable time for lease expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	loSubnet   = netip.MustParsePrefix("127.0.0.0/24")
	loPoolFrom = netip.MustParseAddr("127.0.0.100")
	loPoolTo   = netip.MustParseAddr("127.0.0.103")
	loReserved = netip.MustParseAddr("127.0.0.50")
)

func serverConfig(cn, relay *clientNet) Config {
	return Config{
		Mode: ModeServer, Subnet: loSubnet, PoolStart: loPoolFrom, PoolEnd: loPoolTo,
		Router: netip.MustParseAddr("127.0.0.254"), DNS: []netip.Addr{netip.MustParseAddr("127.0.0.53")},
		DomainName: "chassis.test", LeaseTime: time.Hour,
		ClientPort: cn.port(), RelayPort: relay.port(), Boot: testBoot(),
	}
}

// TestServerLeaseLifecycle drives server mode over real UDP sockets on loopback with nclient4.
func TestServerLeaseLifecycle(t *testing.T) {
	cn, relay := newClientNet(t), newClientNet(t)
	store := newMemStore()
	clock := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	macA, macB, macC := mustMAC(t, "02:00:00:00:00:0a"), mustMAC(t, "02:00:00:00:00:0b"), mustMAC(t, "02:00:00:00:00:0c")
	macR, macD := mustMAC(t, "02:00:00:00:00:50"), mustMAC(t, "02:00:00:00:00:0d")
	inv := inventory{
		macA.String(): {ID: "a", Netboot: true}, macB.String(): {ID: "b"}, macC.String(): {ID: "c"},
		macD.String(): {ID: "d"}, "02:00:00:00:00:0e": {ID: "e"}, macR.String(): {ID: "r", Addr: loReserved, Hostname: "blade-r"},
	}
	ctx := context.Background()
	start := func() *loopback {
		lb := startLoopback(t, serverConfig(cn, relay), Deps{Inventory: inv, Leases: store})
		lb.srv.now = clock.now
		return lb
	}
	lb := start()

	// DISCOVER → OFFER → REQUEST → ACK, persisted before the ACK.
	a := cn.client(t, macA, lb.addr)
	leaseA, err := a.Request(ctx)
	if err != nil {
		t.Fatalf("A: DORA: %v", err)
	}
	addrA := ip4(leaseA.ACK.YourIPAddr)
	if !addrA.IsValid() || u32(addrA) < u32(loPoolFrom) || u32(addrA) > u32(loPoolTo) {
		t.Fatalf("A got %v, want an address of the pool", addrA)
	}
	wantLease := Lease{MAC: macA, Addr: addrA, Expiry: clock.now().Add(time.Hour), State: LeaseBound}
	if got, _ := store.get(macA); !cmp.Equal(got, wantLease, cmpopts.EquateComparable(netip.Addr{})) {
		t.Errorf("stored lease after ACK: %+v, want %+v", got, wantLease)
	}
	ack := leaseA.ACK
	if diff := cmp.Diff(map[string]string{
		"mask": "ffffff00", "router": "127.0.0.254", "dns": "127.0.0.53", "domain": "chassis.test",
		"lease": "3600", "t1": "1800", "t2": "3150", "server": "127.0.0.1",
	}, map[string]string{
		"mask": net.IPMask(ack.Options[1]).String(), "router": ip4(ack.Options[3]).String(),
		"dns": ip4(ack.Options[6]).String(), "domain": string(ack.Options[15]),
		"lease": itoa(ack.Options[51]), "t1": itoa(ack.Options[58]), "t2": itoa(ack.Options[59]),
		"server": ip4(ack.Options[54]).String(),
	}); diff != "" {
		t.Errorf("ACK options (-want +got):\n%s", diff)
	}

	// RENEWING: unicast, ciaddr set; the ACK goes to ciaddr and extends the lease.
	clock.add(30 * time.Minute)
	renewed, err := a.Renew(ctx, leaseA)
	if err != nil {
		t.Fatalf("A: renew: %v", err)
	}
	if got := ip4(renewed.ACK.YourIPAddr); got != addrA {
		t.Errorf("renew gave %v, want %v", got, addrA)
	}
	if got, _ := store.get(macA); !got.Expiry.Equal(clock.now().Add(time.Hour)) {
		t.Errorf("renewed expiry %v, want %v", got.Expiry, clock.now().Add(time.Hour))
	}

	// A reservation from the Inventory.
	r := cn.client(t, macR, lb.addr)
	leaseR, err := r.Request(ctx)
	if err != nil {
		t.Fatalf("R: DORA: %v", err)
	}
	if got := ip4(leaseR.ACK.YourIPAddr); got != loReserved {
		t.Errorf("R got %v, want its reservation %v", got, loReserved)
	}
	if got := string(leaseR.ACK.Options[optHostname]); got != "blade-r" {
		t.Errorf("R hostname option %q, want blade-r", got)
	}

	// INFORM: ACK with no yiaddr and no lease time, sent to ciaddr.
	inf, err := r.Inform(ctx, loReserved.AsSlice())
	if err != nil {
		t.Fatalf("R: inform: %v", err)
	}
	if ip4(inf.YourIPAddr).IsValid() || inf.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("INFORM ACK has yiaddr %v / lease time %v; want neither", inf.YourIPAddr, inf.Options[51])
	}

	// NAK: INIT-REBOOT for an address outside the pool, and for R's reserved address.
	for _, bad := range []netip.Addr{netip.MustParseAddr("127.0.0.200"), loReserved, netip.MustParseAddr("10.1.2.3")} {
		reply := initReboot(t, a, bad)
		if reply == nil || reply.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("INIT-REBOOT for %v: got %v, want NAK", bad, reply)
		} else if ip4(reply.YourIPAddr).IsValid() || reply.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
			t.Errorf("NAK carries yiaddr or lease time: %v", reply.Summary())
		}
	}
	// INIT-REBOOT for its own address is ACKed.
	if reply := initReboot(t, a, addrA); reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("INIT-REBOOT for own address: got %v, want ACK", reply)
	}

	// RELEASE frees A's address: B may take it.
	release(t, cn, lb, leaseA)
	waitFor(t, "A's lease deleted", func() bool { _, ok := store.get(macA); return !ok })
	b := cn.client(t, macB, lb.addr)
	leaseB, err := b.Request(ctx, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addrA.AsSlice())))
	if err != nil {
		t.Fatalf("B: DORA: %v", err)
	}
	if got := ip4(leaseB.ACK.YourIPAddr); got != addrA {
		t.Errorf("B got %v, want A's released %v", got, addrA)
	}

	// DECLINE: the address is held back; B gets another one, and nobody gets the declined one.
	decline(t, cn, lb, leaseB)
	waitFor(t, "declined address stored", func() bool { l, _ := store.get(macB); return l.State == LeaseDeclined })
	if l, _ := store.get(macB); l.Addr != addrA || !l.Expiry.Equal(clock.now().Add(defaultDeclineHold)) {
		t.Errorf("declined record %+v, want %v held until %v", l, addrA, clock.now().Add(defaultDeclineHold))
	}
	offerB, err := b.DiscoverOffer(ctx)
	if err != nil {
		t.Fatalf("B: rediscover: %v", err)
	}
	if got := ip4(offerB.YourIPAddr); got == addrA || !got.IsValid() {
		t.Errorf("B offered %v after declining it", got)
	}
	c := cn.client(t, macC, lb.addr)
	offerC, err := c.DiscoverOffer(ctx, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addrA.AsSlice())))
	if err != nil {
		t.Fatalf("C: discover: %v", err)
	}
	if got := ip4(offerC.YourIPAddr); got == addrA {
		t.Errorf("C offered the declined address %v", got)
	}

	// Relayed (giaddr): replies go to the relay's server port, option 82 is echoed.
	opt82 := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7")))
	d := relay.client(t, macD, lb.addr)
	leaseD, err := d.Request(ctx, dhcpv4.WithRelay(net.IPv4(127, 0, 0, 1)), dhcpv4.WithOption(opt82))
	if err != nil {
		t.Fatalf("D via relay: DORA: %v", err)
	}
	if got := string(leaseD.ACK.Options[optRelayInfo]); got != string(opt82.Value.ToBytes()) {
		t.Errorf("relayed ACK option 82 = %q, want echoed %q", got, opt82.Value.ToBytes())
	}
	// A relay outside the subnet is ignored.
	foreign, _ := dhcpv4.NewDiscovery(macD, dhcpv4.WithRelay(net.IPv4(10, 9, 9, 9)))
	before := 0
	for _, o := range lb.obs.all() {
		if o.MAC.String() == macD.String() {
			before++
		}
	}
	relay.send(t, foreign.ToBytes(), lb.addr)
	lb.seen(t, macD, before+1)
	if got := relay.expect(t, macD, 100*time.Millisecond); got != nil {
		t.Errorf("answered a relay from a foreign subnet: %v", got.Summary())
	}

	// Restart: leases survive. R's and D's addresses are still theirs and nobody else's.
	lb.stop()
	clock.add(time.Minute)
	lb = start()
	lD, _ := store.get(macD)
	e := cn.client(t, mustMAC(t, "02:00:00:00:00:0e"), lb.addr)
	if reply := initReboot(t, e, lD.Addr); reply == nil || reply.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("E after restart: INIT-REBOOT for D's %v got %v, want NAK", lD.Addr, reply)
	}
	for _, mac := range []net.HardwareAddr{macR, macD} {
		l, _ := store.get(mac)
		if reply := initReboot(t, cn.client(t, mac, lb.addr), l.Addr); reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck {
			t.Errorf("%v after restart: INIT-REBOOT for %v got %v, want ACK", mac, l.Addr, reply)
		}
	}
	offerE, err := e.DiscoverOffer(ctx, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(lD.Addr.AsSlice())))
	if err != nil {
		t.Fatalf("E: discover: %v", err)
	}
	if got := ip4(offerE.YourIPAddr); got == lD.Addr || got == addrA {
		t.Errorf("E offered %v, which is D's lease or declined", got)
	}

	if got := counter(t, lb.srv.m.replies.WithLabelValues("nak")); got != 1 {
		t.Errorf("nak counter after restart = %v, want 1", got)
	}
	// Lease gauges: R and D bound, A's old address declined (by B), E's offer.
	want := map[string]float64{"bound": 2, "offered": 1, "declined": 1}
	got := map[string]float64{}
	var free, size float64
	mfs, err := lb.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "imaged_dhcp_leases":
				got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			case "imaged_dhcp_pool_free_addresses":
				free = m.GetGauge().GetValue()
			case "imaged_dhcp_pool_addresses":
				size = m.GetGauge().GetValue()
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("imaged_dhcp_leases (-want +got):\n%s", diff)
	}
	// The pool is 127.0.0.100-103: D's lease, the declined address and E's offer are in it.
	if free != 1 || size != 4 {
		t.Errorf("imaged_dhcp_pool_free_addresses = %v, imaged_dhcp_pool_addresses = %v, want 1 of 4", free, size)
	}
}

func itoa(b []byte) string {
	if len(b) != 4 {
		return "bad"
	}
	return strconv.FormatUint(uint64(binary.BigEndian.Uint32(b)), 10)
}

// initReboot sends an INIT-REBOOT REQUEST for a (option 50, no server identifier, no ciaddr)
// and returns the reply, or nil.
func initReboot(t *testing.T, c *nclient4.Client, a netip.Addr) *dhcpv4.DHCPv4 {
	t.Helper()
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(c.InterfaceAddr()), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.AsSlice())), dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.SendAndRead(context.Background(), c.RemoteAddr(), req,
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if errors.Is(err, nclient4.ErrNoResponse) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

func release(t *testing.T, cn *clientNet, lb *loopback, l *nclient4.Lease) {
	t.Helper()
	p, err := dhcpv4.NewReleaseFromACK(l.ACK)
	if err != nil {
		t.Fatal(err)
	}
	cn.send(t, p.ToBytes(), lb.addr)
}

func decline(t *testing.T, cn *clientNet, lb *loopback, l *nclient4.Lease) {
	t.Helper()
	p, err := dhcpv4.New(dhcpv4.WithHwAddr(l.ACK.ClientHWAddr), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(l.ACK.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.ACK.ServerIdentifier())))
	if err != nil {
		t.Fatal(err)
	}
	cn.send(t, p.ToBytes(), lb.addr)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
