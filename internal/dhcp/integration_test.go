package dhcp

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/netns"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
)

// Integration tests: real DHCP clients (busybox udhcpc, ISC dhclient, a PXE client built on
// nclient4) and dnsmasq talk to imaged inside network namespaces made by internal/lab/netns. Root only.

const helperEnv = "IMAGED_DHCP_HELPER_CONFIG"

// serverSpec configures TestHelperDHCPServer.
type serverSpec struct {
	Mode      Mode
	Unknown   UnknownPolicy
	Reserve   map[string]string // MAC → reserved address ("" = from the pool)
	Pool      [2]string
	Ready     string // file written once the sockets are bound
	Result    string // file the packet counters are written to on exit
	Interface string
}

// TestHelperDHCPServer is not a test: StartHelper runs it inside the server namespace, where
// it serves 10.99.0.0/24 on veth-srv until interrupted, then writes its packet counters.
func TestHelperDHCPServer(t *testing.T) {
	if !netns.IsHelper("TestHelperDHCPServer") {
		t.Skip("helper process: runs only inside a namespace via netns.StartHelper")
	}
	var spec serverSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		t.Fatal(err)
	}
	inv := inventory{}
	for m, a := range spec.Reserve {
		h := Host{ID: "blade-" + m, Netboot: true}
		if a != "" {
			h.Addr = netip.MustParseAddr(a)
		}
		inv[m] = h
	}
	cfg := Config{Mode: spec.Mode, Interface: spec.Interface, ServerIP: netip.MustParseAddr("10.99.0.1"),
		Subnet: netip.MustParsePrefix("10.99.0.0/24"), Unknown: spec.Unknown, Boot: testBoot()}
	if spec.Pool[0] != "" {
		cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr(spec.Pool[0]), netip.MustParseAddr(spec.Pool[1])
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(cfg, Deps{Inventory: inv, Leases: newMemStore(), Registerer: reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := os.WriteFile(spec.Ready, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		t.Error(err)
	}
	counts := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "imaged_dhcp_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var typ, disp string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "type":
					typ = l.GetValue()
				case "disposition":
					disp = l.GetValue()
				}
			}
			counts[typ+"/"+disp] = m.GetCounter().GetValue()
		}
	}
	b, _ := json.Marshal(counts)
	if err := os.WriteFile(spec.Result, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverHelper is a running TestHelperDHCPServer.
type serverHelper struct {
	cmd    *exec.Cmd
	result string
}

func startServer(t *testing.T, p *netns.Pair, spec serverSpec) *serverHelper {
	t.Helper()
	dir := t.TempDir()
	spec.Ready, spec.Result = filepath.Join(dir, "ready"), filepath.Join(dir, "result.json")
	if spec.Interface == "" {
		spec.Interface = p.SrvIf
	}
	b, _ := json.Marshal(spec)
	cmd := netns.StartHelper(t, p.Srv, "TestHelperDHCPServer", helperEnv+"="+string(b))
	waitFile(t, spec.Ready, 10*time.Second)
	return &serverHelper{cmd: cmd, result: spec.Result}
}

// stop interrupts the server and returns its packet counters ("type/disposition" → count).
func (h *serverHelper) stop(t *testing.T) map[string]float64 {
	t.Helper()
	_ = h.cmd.Process.Signal(os.Interrupt)
	waitFile(t, h.result, 10*time.Second)
	b, err := os.ReadFile(h.result)
	if err != nil {
		t.Fatal(err)
	}
	var counts map[string]float64
	if err := json.Unmarshal(b, &counts); err != nil {
		t.Fatalf("server counters %q: %v", b, err)
	}
	return counts
}

func waitFile(t *testing.T, name string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, err := os.Stat(name); err == nil && (st.Size() > 0 || filepath.Base(name) == "ready") {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", name)
}

// udhcpc runs busybox udhcpc once in ns and returns the address it was offered and bound.
func udhcpc(t *testing.T, ns string) string {
	t.Helper()
	netns.RequireCommand(t, "busybox", "busybox")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := netns.Command(ctx, ns, "busybox", "udhcpc", "-i", "dc0", "-n", "-q", "-f", "-s", "/bin/true").CombinedOutput()
	t.Logf("udhcpc:\n%s", out)
	if err != nil {
		t.Fatalf("udhcpc: %v", err)
	}
	m := regexp.MustCompile(`lease of (\S+) obtained`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("udhcpc printed no lease")
	}
	return string(m[1])
}

func TestIntegrationUdhcpcGetsReservation(t *testing.T) {
	p := netns.NewPair(t)
	mac := "02:42:0a:63:00:4d"
	ns, _ := p.AddClient(mac)
	startServer(t, p, serverSpec{Mode: ModeServer, Reserve: map[string]string{mac: "10.99.0.77"},
		Pool: [2]string{"10.99.0.100", "10.99.0.200"}})
	if got := udhcpc(t, ns); got != "10.99.0.77" {
		t.Errorf("udhcpc got %s, want the reservation 10.99.0.77", got)
	}
}

func TestIntegrationDhclientGetsReservation(t *testing.T) {
	p := netns.NewPair(t)
	netns.RequireCommand(t, "dhclient", "isc-dhcp-client")
	mac := "02:42:0a:63:00:4e"
	ns, _ := p.AddClient(mac)
	startServer(t, p, serverSpec{Mode: ModeServer, Reserve: map[string]string{mac: "10.99.0.78"}})
	dir := t.TempDir()
	lf, pf := filepath.Join(dir, "dhclient.leases"), filepath.Join(dir, "dhclient.pid")
	// dhclient stays in the background once bound (pitfall P13): stop it by its pid file.
	t.Cleanup(func() {
		if b, err := os.ReadFile(pf); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				if proc, err := os.FindProcess(pid); err == nil {
					_ = proc.Kill()
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := netns.Command(ctx, ns, "dhclient", "-1", "-v", "-sf", "/bin/true", "-lf", lf, "-pf", pf, "dc0").CombinedOutput()
	t.Logf("dhclient:\n%s", out)
	if err != nil {
		t.Fatalf("dhclient: %v", err)
	}
	leases, _ := os.ReadFile(lf)
	if !strings.Contains(string(leases), "fixed-address 10.99.0.78;") {
		t.Errorf("dhclient lease file has no fixed-address 10.99.0.78:\n%s", leases)
	}
	if !strings.Contains(string(out), "DHCPACK of 10.99.0.78 from 10.99.0.1") {
		t.Errorf("dhclient did not report the ACK of 10.99.0.78")
	}
}

// pxeSpec configures TestHelperPXEClient.
type pxeSpec struct {
	Result string
	Wait   time.Duration // how long offers are collected, as EDK2 does for 4 s
}

// pxeOffer is what TestHelperPXEClient saw of one reply.
type pxeOffer struct {
	Type, YourIP, NextServer, ServerID, File, Opt60, Opt43, Opt97 string
}

type pxeResult struct {
	Offers  []pxeOffer
	BootAck *pxeOffer // the answer of the proxy's boot-server port (4011)
	Err     string
}

var pxeUUID = []byte{0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01}

// TestHelperPXEClient is not a test: StartHelper runs it in a client namespace with an
// unconfigured dc0, where it behaves like EDK2's PXE: a DISCOVER with options 60, 93, 94 and 97,
// collecting every offer; then it takes the DHCP server's address and asks the proxy's
// boot-server port for its boot file.
func TestHelperPXEClient(t *testing.T) {
	if !netns.IsHelper("TestHelperPXEClient") {
		t.Skip("helper process: runs only inside a namespace via netns.StartHelper")
	}
	var spec pxeSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		t.Fatal(err)
	}
	res := pxeClient(t, spec)
	b, _ := json.Marshal(res)
	if err := os.WriteFile(spec.Result, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func pxeClient(t *testing.T, spec pxeSpec) pxeResult {
	var res pxeResult
	ifi, err := net.InterfaceByName("dc0")
	if err != nil {
		return pxeResult{Err: err.Error()}
	}
	conn, err := nclient4.NewRawUDPConn("dc0", 68)
	if err != nil {
		return pxeResult{Err: err.Error()}
	}
	defer conn.Close()
	disc, err := dhcpv4.NewDiscovery(ifi.HardwareAddr,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 0}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, pxeUUID),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionClassIdentifier,
			dhcpv4.OptionTFTPServerName, dhcpv4.OptionBootfileName, dhcpv4.OptionClientMachineIdentifier))
	if err != nil {
		return pxeResult{Err: err.Error()}
	}
	// Like EDK2, retransmit the DISCOVER (a fresh veth may not forward the first frame) and
	// collect every offer until the wait is over; one offer per server.
	deadline := time.Now().Add(spec.Wait)
	seen := map[pxeOffer]bool{}
	buf := make([]byte, 1500)
	for next := time.Now(); time.Now().Before(deadline); {
		if !time.Now().Before(next) {
			if _, err := conn.WriteTo(disc.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
				return pxeResult{Err: err.Error()}
			}
			next = time.Now().Add(400 * time.Millisecond)
		}
		rd := next
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.TransactionID != disc.TransactionID || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		if o := offerOf(p); !seen[o] {
			seen[o] = true
			res.Offers = append(res.Offers, o)
		}
	}
	// Take the DHCP server's address (no REQUEST needed for the test), then ask the proxy.
	var mine, proxy string
	for _, o := range res.Offers {
		if o.YourIP != "" {
			mine = o.YourIP
		} else {
			proxy = o.ServerID
		}
	}
	if mine == "" || proxy == "" {
		return res
	}
	if out, err := exec.Command("ip", "addr", "add", mine+"/24", "dev", "dc0").CombinedOutput(); err != nil {
		res.Err = fmt.Sprintf("ip addr add: %v: %s", err, out)
		return res
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(mine)})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer uc.Close()
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(ifi.HardwareAddr), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP(mine)), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, pxeUUID))
	for try := 0; try < 3 && res.BootAck == nil; try++ {
		if _, err := uc.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.ParseIP(proxy), Port: 4011}); err != nil {
			res.Err = err.Error()
			return res
		}
		_ = uc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := uc.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		if p, err := dhcpv4.FromBytes(buf[:n]); err == nil && p.TransactionID == req.TransactionID {
			o := offerOf(p)
			res.BootAck = &o
		}
	}
	return res
}

func offerOf(p *dhcpv4.DHCPv4) pxeOffer {
	s := func(ip net.IP) string {
		if a := ip4(ip); a.IsValid() {
			return a.String()
		}
		return ""
	}
	return pxeOffer{Type: typeName(p), YourIP: s(p.YourIPAddr), NextServer: s(p.ServerIPAddr),
		ServerID: s(p.Options[optServerID]), File: p.BootFileName, Opt60: string(p.Options[optVendorClass]),
		Opt43: hex.EncodeToString(p.Options[optVendorOpts]), Opt97: hex.EncodeToString(p.Options[optMachineID])}
}

// TestIntegrationProxyBesideDnsmasq: dnsmasq is the network's DHCP server (no boot options);
// imaged in proxy mode on the same interface of the same namespace adds the boot file. A PXE
// client gets its address from dnsmasq and its boot file from imaged, and imaged's
// boot-server port answers its follow-up REQUEST.
func TestIntegrationProxyBesideDnsmasq(t *testing.T) {
	p := netns.NewPair(t)
	netns.RequireCommand(t, "dnsmasq", "dnsmasq")
	mac := "02:42:0a:63:00:4f"
	ns, _ := p.AddClient(mac)

	dir := t.TempDir()
	conf := filepath.Join(dir, "dnsmasq.conf")
	pidFile := filepath.Join(dir, "dnsmasq.pid")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`port=0
interface=%s
bind-interfaces
except-interface=lo
dhcp-range=10.99.0.100,10.99.0.200,255.255.255.0,1h
dhcp-authoritative
no-ping
dhcp-leasefile=%s
pid-file=%s
log-dhcp
log-facility=%s
`, p.SrvIf, filepath.Join(dir, "dnsmasq.leases"), pidFile, filepath.Join(dir, "dnsmasq.log"))), 0o600); err != nil {
		t.Fatal(err)
	}
	dm := netns.Command(context.Background(), p.Srv, "dnsmasq", "--conf-file="+conf, "--keep-in-foreground")
	dm.Stdout, dm.Stderr = os.Stderr, os.Stderr
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dm.Process.Kill() // ip netns exec execs dnsmasq: this is its pid, as in pid-file
		_ = dm.Wait()
		if log, err := os.ReadFile(filepath.Join(dir, "dnsmasq.log")); err == nil {
			t.Logf("dnsmasq log:\n%s", log)
		}
	})
	waitFile(t, pidFile, 10*time.Second)

	startServer(t, p, serverSpec{Mode: ModeProxy, Reserve: map[string]string{mac: ""}})

	result := filepath.Join(t.TempDir(), "pxe.json")
	b, _ := json.Marshal(pxeSpec{Result: result, Wait: 2 * time.Second})
	netns.StartHelper(t, ns, "TestHelperPXEClient", helperEnv+"="+string(b))
	waitFile(t, result, 20*time.Second)
	var res pxeResult
	raw, _ := os.ReadFile(result)
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("PXE client result %q: %v", raw, err)
	}
	t.Logf("PXE client saw: %+v", res)
	if res.Err != "" {
		t.Fatalf("PXE client: %s", res.Err)
	}
	uuid := hex.EncodeToString(pxeUUID)
	var fromDnsmasq, fromImaged []pxeOffer
	for _, o := range res.Offers {
		if o.YourIP != "" {
			fromDnsmasq = append(fromDnsmasq, o)
		} else {
			fromImaged = append(fromImaged, o)
		}
	}
	if len(fromDnsmasq) != 1 || fromDnsmasq[0].File != "" || fromDnsmasq[0].Type != "offer" {
		t.Errorf("offers with an address: %+v, want one from dnsmasq without a boot file", fromDnsmasq)
	} else if a := netip.MustParseAddr(fromDnsmasq[0].YourIP); u32(a) < u32(netip.MustParseAddr("10.99.0.100")) || u32(a) > u32(netip.MustParseAddr("10.99.0.200")) {
		t.Errorf("dnsmasq offered %v, outside its range", a)
	}
	want := pxeOffer{Type: "offer", NextServer: "10.99.0.1", ServerID: "10.99.0.1", File: "ipxe.efi",
		Opt60: "PXEClient", Opt43: "060108ff", Opt97: uuid}
	if len(fromImaged) != 1 || fromImaged[0] != want {
		t.Errorf("offers without an address: %+v, want exactly imaged's %+v", fromImaged, want)
	}
	want.Type = "ack"
	if res.BootAck == nil || *res.BootAck != want {
		t.Errorf("boot-server (4011) answer %+v, want %+v", res.BootAck, want)
	}
}

// blast sends n datagrams of junk and near-DHCP to 10.99.0.1:67 from the client bridge
// namespace within d, and returns how many were malformed by construction.
func blast(seed uint64, n int, d time.Duration, send func([]byte) error) (malformed int, err error) {
	r := rand.New(rand.NewPCG(seed, seed))
	good, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 1},
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	goodBytes := good.ToBytes()
	start := time.Now()
	for i := range n {
		var b []byte
		switch i % 6 {
		case 0: // random bytes of random length
			b = make([]byte, r.IntN(1600))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			malformed++
		case 1: // truncated DHCP
			b = goodBytes[:r.IntN(len(goodBytes)-10)]
			malformed++
		case 2: // an option length running past the end
			b = append([]byte(nil), goodBytes[:250]...)
			b[245] = 200
			malformed++
		case 3: // BOOTREPLY
			b = append([]byte(nil), goodBytes...)
			b[0] = 2
			malformed++
		case 4: // oversized
			b = append(append([]byte(nil), goodBytes...), make([]byte, 1200+r.IntN(200))...)
			malformed++
		case 5: // a well-formed DISCOVER from a random unknown MAC
			p := *good
			p.ClientHWAddr = net.HardwareAddr{2, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			p.TransactionID = dhcpv4.TransactionID{byte(i), byte(i >> 8), byte(i >> 16), 1}
			b = p.ToBytes()
		}
		if err := send(b); err != nil {
			return malformed, err
		}
		// Pace to spread n over d.
		if want := time.Duration(i+1) * d / time.Duration(n); time.Since(start) < want {
			time.Sleep(want - time.Since(start))
		}
	}
	return malformed, nil
}

type blastSpec struct {
	N      int
	D      time.Duration
	Result string
}

// TestHelperBlaster is not a test: StartHelper runs it in the client bridge namespace, where it
// sends junk at the server and writes how many malformed packets it sent.
func TestHelperBlaster(t *testing.T) {
	if !netns.IsHelper("TestHelperBlaster") {
		t.Skip("helper process: runs only inside a namespace via netns.StartHelper")
	}
	var spec blastSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 67}
	malformed, err := blast(1, spec.N, spec.D, func(b []byte) error { _, err := c.WriteToUDP(b, dst); return err })
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec.Result, []byte(strconv.Itoa(malformed)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationBlast: 20000 junk packets in 4 s do not keep udhcpc from its lease, and the
// malformed ones are counted.
func TestIntegrationBlast(t *testing.T) {
	p := netns.NewPair(t)
	mac := "02:42:0a:63:00:50"
	ns, _ := p.AddClient(mac)
	srv := startServer(t, p, serverSpec{Mode: ModeServer, Reserve: map[string]string{mac: "10.99.0.80"}})
	result := filepath.Join(t.TempDir(), "blast")
	b, _ := json.Marshal(blastSpec{N: 20000, D: 4 * time.Second, Result: result})
	netns.StartHelper(t, p.Cli, "TestHelperBlaster", helperEnv+"="+string(b))
	time.Sleep(500 * time.Millisecond) // udhcpc starts in the middle of the flood
	if got := udhcpc(t, ns); got != "10.99.0.80" {
		t.Errorf("udhcpc during the flood got %s, want 10.99.0.80", got)
	}
	waitFile(t, result, 15*time.Second)
	sentB, _ := os.ReadFile(result)
	sent, _ := strconv.Atoi(string(sentB))
	counts := srv.stop(t)
	t.Logf("sent %d malformed; server counters: %v", sent, counts)
	if got := counts["none/malformed"]; got < float64(sent)*0.9 {
		t.Errorf("malformed counter %v, want about the %d malformed packets sent", got, sent)
	}
	if got := counts["discover/unknown"]; got < 1000 {
		t.Errorf("discover/unknown counter %v, want the ~3300 DISCOVERs from random MACs", got)
	}
	if counts["request/ack"] < 1 {
		t.Errorf("no ACK counted for udhcpc")
	}
}
