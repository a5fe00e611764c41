package dhcp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// memStore is an in-memory LeaseStore.
type memStore struct {
	mu     sync.Mutex
	leases map[string]Lease
	puts   int
}

func newMemStore() *memStore { return &memStore{leases: map[string]Lease{}} }

func (m *memStore) Leases() ([]Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ls []Lease
	for _, l := range m.leases {
		ls = append(ls, l)
	}
	return ls, nil
}

func (m *memStore) PutLease(l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leases[l.MAC.String()] = l
	m.puts++
	return nil
}

func (m *memStore) DeleteLease(mac net.HardwareAddr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, mac.String())
	return nil
}

func (m *memStore) get(mac net.HardwareAddr) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases[mac.String()]
	return l, ok
}

// inventory is a map-backed Inventory.
type inventory map[string]Host

func (i inventory) Lookup(mac net.HardwareAddr) (Host, bool) {
	h, ok := i[mac.String()]
	return h, ok
}

// observations records what the Observer was told.
type observations struct {
	mu  sync.Mutex
	obs []Observation
}

func (o *observations) Observe(ob Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obs = append(o.obs, ob)
}

func (o *observations) all() []Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.obs)
}

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readPacket(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counter(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// clientNet is the client side of a loopback test network: one UDP socket (the port the
// server sends replies to) shared by any number of test clients, each seeing only the replies
// for its own MAC, as on a real segment.
type clientNet struct {
	conn *net.UDPConn
	mu   sync.Mutex
	subs map[string]chan []byte
}

func newClientNet(t testing.TB) *clientNet {
	t.Helper()
	// Wildcard address so that unicast replies to leased loopback addresses (127.0.0.x) and
	// to ciaddr arrive too; kernel-chosen port.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	n := &clientNet{conn: c, subs: map[string]chan []byte{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b := make([]byte, 2048)
			k, _, err := c.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			p, err := dhcpv4.FromBytes(b[:k])
			if err != nil {
				continue
			}
			select { // kept for the client, even if it is not listening yet
			case n.sub(p.ClientHWAddr) <- b[:k]:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

func (n *clientNet) port() int { return n.conn.LocalAddr().(*net.UDPAddr).Port }

// sub returns the channel of replies for mac.
func (n *clientNet) sub(mac net.HardwareAddr) chan []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.subs[mac.String()]
	if ch == nil {
		ch = make(chan []byte, 64)
		n.subs[mac.String()] = ch
	}
	return ch
}

// conn is a net.PacketConn for one client MAC, for nclient4.
func (n *clientNet) pconn(mac net.HardwareAddr) net.PacketConn {
	return &macConn{n: n, ch: n.sub(mac), closed: make(chan struct{})}
}

// client returns an nclient4 client with MAC mac talking to server.
func (n *clientNet) client(t testing.TB, mac net.HardwareAddr, server netip.AddrPort) *nclient4.Client {
	t.Helper()
	c, err := nclient4.NewWithConn(n.pconn(mac), mac,
		nclient4.WithServerAddr(net.UDPAddrFromAddrPort(server)),
		nclient4.WithTimeout(500*time.Millisecond), nclient4.WithRetry(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send writes raw bytes to dst.
func (n *clientNet) send(t testing.TB, b []byte, dst netip.AddrPort) {
	t.Helper()
	if _, err := n.conn.WriteToUDPAddrPort(b, dst); err != nil {
		t.Fatal(err)
	}
}

// seen waits until the server has reported n packets from mac to its Observer: the packets
// are then handled, and any reply is on its way.
func (lb *loopback) seen(t testing.TB, mac net.HardwareAddr, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		k := 0
		for _, o := range lb.obs.all() {
			if o.MAC.String() == mac.String() {
				k++
			}
		}
		if k >= n {
			return
		}
	}
	t.Fatalf("server did not handle %d packet(s) from %v", n, mac)
}

// expect waits for a reply for mac; nil if none comes within d.
func (n *clientNet) expect(t testing.TB, mac net.HardwareAddr, d time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	select {
	case b := <-n.sub(mac):
		p, err := dhcpv4.FromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	case <-time.After(d):
		return nil
	}
}

type macConn struct {
	n      *clientNet
	ch     chan []byte
	once   sync.Once
	closed chan struct{}
}

func (c *macConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.ch:
		return copy(b, p), nil, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *macConn) WriteTo(b []byte, a net.Addr) (int, error) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("not a UDP address")
	}
	return c.n.conn.WriteToUDP(b, ua)
}

func (c *macConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *macConn) LocalAddr() net.Addr              { return c.n.conn.LocalAddr() }
func (c *macConn) SetDeadline(time.Time) error      { return nil }
func (c *macConn) SetReadDeadline(time.Time) error  { return nil }
func (c *macConn) SetWriteDeadline(time.Time) error { return nil }

// loopback is a Server on 127.0.0.1 (kernel-chosen ports) whose clients live on clientNets.
type loopback struct {
	srv     *Server
	addr    netip.AddrPort // the DHCP port
	pxeAddr netip.AddrPort // proxy mode's boot-server port
	reg     *prometheus.Registry
	obs     *observations
	stop    func()
}

// startLoopback runs a Server for cfg on the loopback interface. Broadcast replies go to
// 127.0.0.1 (never a real broadcast in unit tests).
func startLoopback(t testing.TB, cfg Config, deps Deps) *loopback {
	t.Helper()
	cfg.Interface = "lo"
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.ProxyListenAddr = "127.0.0.1:0"
	if !cfg.ServerIP.IsValid() {
		cfg.ServerIP = netip.MustParseAddr("127.0.0.1")
	}
	lb := &loopback{reg: prometheus.NewRegistry(), obs: &observations{}}
	deps.Registerer = lb.reg
	if deps.Observer == nil {
		deps.Observer = lb.obs
	}
	if deps.Log == nil {
		deps.Log = testLogger(t)
	}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	s.bcast = netip.MustParseAddr("127.0.0.1")
	lb.srv = s
	as := s.Addrs()
	lb.addr = as[0]
	if len(as) > 1 {
		lb.pxeAddr = as[1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	lb.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(lb.stop)
	return lb
}

// testLogger logs to t at Debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
