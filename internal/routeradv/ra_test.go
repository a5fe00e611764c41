package routeradv

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imaged/imaged/internal/lab/netns"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

var testPrefix = netip.MustParsePrefix("fd99::/64")

// TestAdvertisement checks the RA on the wire: prefix on-link and autonomous, no M/O flags,
// router lifetime 0, our MAC as source link-layer address.
func TestAdvertisement(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	b, err := ndp.MarshalMessage(advertisement(Config{Prefix: testPrefix, ValidLifetime: time.Hour, PreferredLifetime: 30 * time.Minute}, mac))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &ndp.RouterAdvertisement{
		Options: []ndp.Option{
			&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
				ValidLifetime: time.Hour, PreferredLifetime: 30 * time.Minute, Prefix: netip.MustParseAddr("fd99::")},
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac},
		},
	}
	if diff := cmp.Diff(want, m, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("advertisement (-want +got):\n%s", diff)
	}
}

func TestNextAdvert(t *testing.T) {
	lo := func(n time.Duration) time.Duration { return 0 }
	hi := func(n time.Duration) time.Duration { return n - 1 }
	for _, tt := range []struct {
		sent int
		rnd  func(time.Duration) time.Duration
		want time.Duration
	}{
		{1, hi, time.Second},
		{2, hi, time.Second},
		{3, lo, 30 * time.Second},
		{3, hi, 40 * time.Second},
		{100, lo, 30 * time.Second},
	} {
		if got := nextAdvert(tt.sent, 40*time.Second, tt.rnd); got != tt.want {
			t.Errorf("nextAdvert(%d) = %v, want %v", tt.sent, got, tt.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no interface":  {Prefix: testPrefix},
		"no prefix":     {Interface: "lo"},
		"IPv4 prefix":   {Interface: "lo", Prefix: netip.MustParsePrefix("10.0.0.0/8")},
		"not a /64":     {Interface: "lo", Prefix: netip.MustParsePrefix("fd99::/48")},
		"fast interval": {Interface: "lo", Prefix: testPrefix, Interval: time.Millisecond},
		"lifetimes":     {Interface: "lo", Prefix: testPrefix, ValidLifetime: time.Minute, PreferredLifetime: time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(cfg, nil); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := New(Config{Interface: "nosuch0", Prefix: testPrefix}, nil); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("New on a missing interface = %v, want an error naming it", err)
	}
}

// FuzzSolicitation: the decoder of received ICMPv6 never panics, and only RSs are taken.
func FuzzSolicitation(f *testing.F) {
	rs, _ := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: net.HardwareAddr{2, 0, 0, 0, 0, 2}}}})
	ra, _ := ndp.MarshalMessage(advertisement(Config{Prefix: testPrefix}, nil))
	f.Add(rs)
	f.Add(ra)
	f.Add([]byte{133, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if solicitation(b) && (len(b) == 0 || b[0] != byte(ipv6.ICMPTypeRouterSolicitation)) {
			t.Fatalf("took ICMPv6 type %d for a solicitation", b[0])
		}
	})
}

type helperSpec struct{ Ready, Interface string }

// TestHelperRA is not a test: StartHelper runs it in the server namespace.
func TestHelperRA(t *testing.T) {
	if !netns.IsHelper("TestHelperRA") {
		t.Skip("helper process: runs only inside a namespace via netns.StartHelper")
	}
	var spec helperSpec
	if err := json.Unmarshal([]byte(os.Getenv("IMAGED_RA_HELPER")), &spec); err != nil {
		t.Fatal(err)
	}
	// A long interval: what the client sees quickly is the initial burst and the answers to
	// its solicitations.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(Config{Interface: spec.Interface, Prefix: testPrefix, Interval: 10 * time.Minute}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := os.WriteFile(spec.Ready, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		t.Error(err)
	}
}

type rsResult struct {
	Err         string
	Delay       time.Duration
	Unicast     bool
	Lifetime    time.Duration
	Managed     bool
	Other       bool
	Prefix      string
	OnLink, Aut bool
}

// TestHelperRS is not a test: StartHelper runs it in a client namespace, where it sends a
// Router Solicitation from dc0's link-local address and times the answer.
func TestHelperRS(t *testing.T) {
	if !netns.IsHelper("TestHelperRS") {
		t.Skip("helper process: runs only inside a namespace via netns.StartHelper")
	}
	res := solicit()
	b, _ := json.Marshal(res)
	if err := os.WriteFile(os.Getenv("IMAGED_RA_HELPER"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func solicit() rsResult {
	ifi, err := net.InterfaceByName("dc0")
	if err != nil {
		return rsResult{Err: err.Error()}
	}
	// Wait out DAD on the link-local address (binding a tentative one fails).
	var c *ndp.Conn
	var ll netip.Addr
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, ll, err = ndp.Listen(ifi, ndp.LinkLocal); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return rsResult{Err: "listen: " + err.Error()}
		}
	}
	defer c.Close()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		return rsResult{Err: err.Error()}
	}
	if err := c.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return rsResult{Err: err.Error()}
	}
	rs := &ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
	start := time.Now()
	if err := c.WriteTo(rs, nil, netip.MustParseAddr("ff02::2")); err != nil {
		return rsResult{Err: "send RS: " + err.Error()}
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		m, cm, _, err := c.ReadFrom()
		if err != nil {
			return rsResult{Err: "no answer: " + err.Error()}
		}
		ra, ok := m.(*ndp.RouterAdvertisement)
		if !ok || cm == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(cm.Dst)
		if dst != ll.WithZone("") {
			continue // a multicast advertisement (the initial burst), not the answer to us
		}
		res := rsResult{Delay: time.Since(start), Unicast: true, Lifetime: ra.RouterLifetime,
			Managed: ra.ManagedConfiguration, Other: ra.OtherConfiguration}
		for _, o := range ra.Options {
			if pi, ok := o.(*ndp.PrefixInformation); ok {
				res.Prefix = netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength)).String()
				res.OnLink, res.Aut = pi.OnLink, pi.AutonomousAddressConfiguration
			}
		}
		return res
	}
}

// TestIntegrationRA: a client's kernel configures an address from our prefix by SLAAC and adds
// no default route; a Router Solicitation is answered at once, unicast.
func TestIntegrationRA(t *testing.T) {
	p := netns.NewPair(t)
	ready := filepath.Join(t.TempDir(), "ready")
	b, _ := json.Marshal(helperSpec{Ready: ready, Interface: p.SrvIf})
	netns.StartHelper(t, p.Srv, "TestHelperRA", "IMAGED_RA_HELPER="+string(b))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("RA sender did not start")
		}
	}
	// The sender needs its link-local address (RFC 4861 §4.2) before it can answer: wait out
	// DAD on veth-srv, so that what is timed below is the sender and not the kernel's DAD.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := netns.Command(context.Background(), p.Srv, "ip", "-6", "addr", "show", "dev", p.SrvIf, "scope", "link").CombinedOutput()
		if err == nil && strings.Contains(string(out), "inet6 fe80::") && !strings.Contains(string(out), "tentative") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usable link-local address on %s: %s", p.SrvIf, out)
		}
	}
	ns, _ := p.AddClient("")

	result := filepath.Join(t.TempDir(), "rs.json")
	netns.StartHelper(t, ns, "TestHelperRS", "IMAGED_RA_HELPER="+result)
	var res rsResult
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if raw, err := os.ReadFile(result); err == nil && len(raw) > 0 {
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("RS helper did not finish")
		}
	}
	t.Logf("solicited advertisement: %+v", res)
	if res.Err != "" {
		t.Fatalf("solicitation: %s", res.Err)
	}
	if diff := cmp.Diff(rsResult{Unicast: true, Prefix: "fd99::/64", OnLink: true, Aut: true}, res,
		cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Delay" }, cmp.Ignore())); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
	if res.Delay > 500*time.Millisecond {
		t.Errorf("answer took %v, want it at once", res.Delay)
	}

	// The kernel's own SLAAC accepted our advertisement; lifetime 0: no default route.
	var addrs string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := netns.Command(context.Background(), ns, "ip", "-6", "addr", "show", "dev", "dc0").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr: %v: %s", err, out)
		}
		addrs = string(out)
		if strings.Contains(addrs, "inet6 fd99::") && strings.Contains(addrs, "dynamic") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SLAAC address from fd99::/64 on dc0:\n%s", addrs)
		}
	}
	out, err := netns.Command(context.Background(), ns, "ip", "-6", "route", "show", "default").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("client has an IPv6 default route via us: %s", out)
	}
}
