package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/lab/netns"
	"github.com/imaged/imaged/internal/machines"
)

// These tests netboot real PXE clients (QEMU under TCG with SeaBIOS/iPXE or OVMF/EDK2) from a
// real `imaged serve` in network namespaces, and pass only when imaged's agent, booted from the
// initramfs imaged served, says hello with the token from the script imaged rendered.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	vmSlots   = make(chan struct{}, 2) // at most 2 VMs at once on a 2-core machine
)

// imagedBinary builds imaged and, beside it where the lab looks for them, imaged-agent and
// imaged-labos-init, once per test binary, and returns imaged's path.
func imagedBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imaged-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "imaged")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/", "github.com/imaged/imaged/cmd/imaged",
			"github.com/imaged/imaged/cmd/imaged-agent", "github.com/imaged/imaged/internal/lab/cmd/imaged-labos-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func cacheDir() string {
	if d := os.Getenv("IMAGED_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/imaged-lab"
}

// assetsDir is shared by the tests so that the initramfs is built once per binary.
var assetsMu sync.Mutex

func requireLab(t *testing.T) {
	t.Helper()
	netns.RequireRoot(t)
	netns.RequireCommand(t, "qemu-system-x86_64", "qemu-system-x86")
	for file, pkg := range map[string]string{"/usr/lib/ipxe/undionly.kpxe": "ipxe", "/usr/lib/ipxe/ipxe.efi": "ipxe",
		"/usr/share/OVMF/OVMF_CODE_4M.fd": "ovmf", "/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu"} {
		if _, err := os.Stat(file); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing: CI must install %s", file, pkg)
			}
			t.Skipf("skipping: %s missing (apt-get install %s)", file, pkg)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// newLab makes a lab with its own namespaces and a copy of the shared boot assets.
func newLab(t *testing.T, prefix string) *lab.Lab {
	t.Helper()
	requireLab(t)
	bin := imagedBinary(t)
	dir := t.TempDir()
	shared := filepath.Join(os.TempDir(), "imaged-e2e-assets")
	assetsMu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err := lab.New(shared, bin, prefix, testWriter{t}).PrepareAssets(ctx, cacheDir())
	cancel()
	assetsMu.Unlock()
	if err != nil {
		t.Fatalf("boot assets: %v", err)
	}
	l := lab.New(dir, bin, prefix, testWriter{t})
	if err := os.Symlink(filepath.Join(shared, "boot"), l.BootDir()); err != nil {
		t.Fatal(err)
	}
	if err := l.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		if t.Failed() {
			for _, f := range []string{"imaged.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("--- %s (last 60 lines)\n%s", f, tail(b, 60))
				}
			}
		}
	})
	return l
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// boot powers b on; if the test fails, the end of its console is in the test's log.
func boot(ctx context.Context, t *testing.T, l *lab.Lab, b lab.Blade) *lab.Running {
	t.Helper()
	vm, err := l.Boot(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			console, _ := os.ReadFile(vm.LogPath())
			t.Logf("--- console of %s (last 40 lines)\n%s", b.ID, tail(console, 40))
		}
	})
	return vm
}

// netboot powers b on, waits for its agent's hello, and returns the VM and imaged's events.
func netboot(t *testing.T, l *lab.Lab, b lab.Blade, timeout time.Duration) (*lab.Running, machines.Machine, []machines.Event) {
	t.Helper()
	vmSlots <- struct{}{}
	defer func() { <-vmSlots }()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	vm := boot(ctx, t, l, b)
	defer vm.Stop()
	m, err := l.WaitHello(ctx, b.ID, vm.Started(), vm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`imaged agent: hello accepted`)); err != nil {
		t.Errorf("the console never showed the accepted hello: %v", err)
	}
	ev, err := l.Events(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	lab.PrintTimeline(&buf, lab.Timeline(vm, ev))
	t.Logf("%s hello after %.1f s; timeline:\n%s", b.ID, m.LastHello.Time.Sub(vm.Started()).Seconds(), buf.String())
	return vm, m, ev
}

// requireEvents checks that imaged recorded each kind of event whose message matches.
func requireEvents(t *testing.T, ev []machines.Event, want map[string]string) {
	t.Helper()
	for kind, pattern := range want {
		re := regexp.MustCompile(pattern)
		found := false
		for _, e := range ev {
			if e.Kind == kind && re.MatchString(e.Message) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no %q event matching %q among %d events", kind, pattern, len(ev))
		}
	}
}

func TestNetbootBIOSVirtio(t *testing.T) {
	l := newLab(t, "imt-bios")
	b := lab.Blade{ID: "ms1-c1n1", MAC: "52:54:00:99:00:11", IP: "10.99.0.11", Firmware: "bios"}
	cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	_, m, ev := netboot(t, l, b, 150*time.Second)
	if m.LastHello.IP.String() != b.IP {
		t.Errorf("agent's address %s, want the reservation %s", m.LastHello.IP, b.IP)
	}
	requireEvents(t, ev, map[string]string{
		"dhcp":   `ipxe`,
		"script": `profile agent`,
		"http":   `initrd\.img: 200`,
		"hello":  `agent hello`,
	})
}

func TestNetbootUEFIPXEChain(t *testing.T) {
	l := newLab(t, "imt-uefi")
	b := lab.Blade{ID: "ms1-c1n2", MAC: "52:54:00:99:00:12", IP: "10.99.0.12", Firmware: "uefi", NoROM: true}
	cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	vm, m, ev := netboot(t, l, b, 240*time.Second)
	if m.LastHello.IP.String() != b.IP {
		t.Errorf("agent's address %s, want the reservation %s", m.LastHello.IP, b.IP)
	}
	// EDK2's PXE client asked first (arch 7, no iPXE), got ipxe.efi over TFTP, and the iPXE it
	// started asked again and got the script: the chain ran once, without a loop.
	requireEvents(t, ev, map[string]string{
		"dhcp":   `uefi-pxe`,
		"tftp":   `ipxe\.efi`,
		"script": `profile agent`,
		"hello":  `agent hello`,
	})
	scripts := 0
	for _, e := range ev {
		if e.Kind == "script" {
			scripts += max(1, e.Count) // repeats are coalesced into one event with a count
		}
	}
	if scripts != 1 {
		t.Errorf("the script was served %d times; the chainload must not loop", scripts)
	}
	if ms := vm.Milestones(); len(ms) == 0 || ms[0].Name != "firmware" {
		t.Errorf("milestones: %+v", ms)
	}
}

// With TFTP off, OVMF's PXEv4 and PXEv6 boot options fail and it goes on to "UEFI HTTPv4": a DHCP
// DISCOVER with vendor class HTTPClient and arch 16, answered with the http URL of ipxe.efi.
func TestNetbootUEFIHTTPBoot(t *testing.T) {
	l := newLab(t, "imt-http")
	b := lab.Blade{ID: "ms1-c1n4", MAC: "52:54:00:99:00:14", IP: "10.99.0.14", Firmware: "uefi", NoROM: true}
	cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{b}, NoTFTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	_, m, ev := netboot(t, l, b, 300*time.Second)
	if m.LastHello.IP.String() != b.IP {
		t.Errorf("agent's address %s, want the reservation %s", m.LastHello.IP, b.IP)
	}
	requireEvents(t, ev, map[string]string{
		"dhcp":   `uefi-http client: ack 10\.99\.0\.14, boot file http://10\.99\.0\.1:8080/boot/assets/ipxe\.efi`,
		"http":   `ipxe\.efi: 200`,
		"script": `profile agent`,
		"hello":  `agent hello`,
	})
}

func TestNetbootProxyBesideDnsmasq(t *testing.T) {
	netns.RequireCommand(t, "dnsmasq", "dnsmasq")
	l := newLab(t, "imt-proxy")
	// The network's own DHCP server, on another host: addresses only, no boot options.
	ns, err := l.Net.AddHost("dhcp", "eth0", "", lab.DNSMasqIP+"/24")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "dnsmasq.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`port=0
interface=eth0
bind-interfaces
except-interface=lo
dhcp-range=10.99.0.150,10.99.0.199,255.255.255.0,1h
dhcp-authoritative
no-ping
dhcp-leasefile=%s/leases
pid-file=%s/dnsmasq.pid
log-dhcp
log-facility=%s/dnsmasq.log
`, dir, dir, dir)), 0o644)
	dns := lab.Command(context.Background(), ns, "dnsmasq", "--keep-in-foreground", "--conf-file="+conf)
	if err := dns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Process.Kill(); dns.Wait() })

	b := lab.Blade{ID: "ms1-c1n3", MAC: "52:54:00:99:00:13", Firmware: "bios"}
	cfg, err := l.WriteConfig(lab.Config{Mode: "proxy", Blades: []lab.Blade{b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	_, m, ev := netboot(t, l, b, 150*time.Second)
	ip := m.LastHello.IP
	if lo, hi := netip.MustParseAddr("10.99.0.150"), netip.MustParseAddr("10.99.0.199"); ip.Less(lo) || hi.Less(ip) {
		t.Errorf("agent's address %s is not from dnsmasq's range 10.99.0.150-199", m.LastHello.IP)
	}
	requireEvents(t, ev, map[string]string{
		"dhcp":   `proxy`,
		"script": `profile agent`,
		"hello":  `agent hello`,
	})
	log, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.log"))
	if !bytes.Contains(log, []byte("DHCPACK(eth0) "+m.LastHello.IP.String())) && !bytes.Contains(log, []byte(m.LastHello.IP.String()+" 52:54:00:99:00:13")) {
		t.Errorf("dnsmasq's log does not show it leased %s:\n%s", m.LastHello.IP, tail(log, 30))
	}
}

// TestMain removes the imaged binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}
