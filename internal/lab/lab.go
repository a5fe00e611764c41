package lab

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imaged/imaged/internal/atomicfile"
	"github.com/imaged/imaged/internal/initrd"
	"github.com/imaged/imaged/internal/machines"
)

// Blade is one QEMU machine of the lab and its inventory entry.
type Blade struct {
	ID       string
	MAC      string
	IP       string // reserved address in server mode
	Firmware string // bios or uefi
	NIC      string // virtio-net-pci or e1000
	NoROM    bool   // see VM.NoROM
	Disk     string // raw disk image file attached as virtio-blk, optional
	// HTTPSCACerts is a PEM file of the certificates the blade's UEFI firmware trusts for HTTPS
	// (its TlsCaCertificate store; see VM.HTTPSCACerts and EDK2CACerts). UEFI only.
	HTTPSCACerts string
}

// Lab is a virtual netboot lab: a Network, imaged serving in its server namespace, and blades.
type Lab struct {
	Dir    string    // work directory: config, state, boot assets, logs
	Imaged string    // the static imaged binary to run
	Agent  string    // the static imaged-agent, the initramfs's /init; New: beside Imaged
	Out    io.Writer // progress lines for a person
	Net    *Network

	daemon     *exec.Cmd
	daemonDone chan error
	client     *http.Client
}

// The lab's other programs, which it finds in imaged's directory (Beside): scripts/build.sh builds
// all three into bin/, the tests into one temporary directory.
const (
	AgentProgram  = "imaged-agent"      // cmd/imaged-agent: the /init of the agent's initramfs
	OSInitProgram = "imaged-labos-init" // internal/lab/cmd/imaged-labos-init: the /init of the lab's OS images
)

// Beside is the program name in the directory of the imaged binary.
func Beside(imaged, name string) string { return filepath.Join(filepath.Dir(imaged), name) }

// ServerIP and friends are the lab's fixed addresses; they exist only inside its namespaces.
const (
	ServerIP  = "10.99.0.1"
	BridgeIP  = "10.99.0.2"
	DNSMasqIP = "10.99.0.3"
	HTTPPort  = 8080
	// HTTPSPort is imaged's HTTPS listener: not its default 8443, where the chassis's BMC
	// emulator listens on the same address.
	HTTPSPort = 8444
)

// BaseURL is imaged's plain URL inside the lab: boot scripts and assets, the booted OS's
// metadata and check-in, /healthz.
func BaseURL() string { return fmt.Sprintf("http://%s:%d", ServerIP, HTTPPort) }

// HTTPSURL is imaged's HTTPS URL inside the lab: the API, the agent API, images.
func HTTPSURL() string { return fmt.Sprintf("https://%s:%d", ServerIP, HTTPSPort) }

// CertFile is the self-signed certificate imaged made for itself in the lab's state directory.
func CertFile(dir string) string { return filepath.Join(dir, "state", "tls", "cert.pem") }

// New returns a lab whose namespaces are named after prefix. Call Up, then Close.
func New(dir, imagedBin, prefix string, out io.Writer) *Lab {
	if out == nil {
		out = io.Discard
	}
	n := &Network{Prefix: prefix, SrvIP: ServerIP, CliIP: BridgeIP}
	return &Lab{Dir: dir, Imaged: imagedBin, Agent: Beside(imagedBin, AgentProgram), Out: out, Net: n,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: Dialer(n.Srv())}}}
}

func (l *Lab) printf(format string, args ...any) { fmt.Fprintf(l.Out, format+"\n", args...) }

// BootDir is where the lab's boot assets live (the config's boot.assets_dir).
func (l *Lab) BootDir() string { return filepath.Join(l.Dir, "boot") }

// PrepareAssets makes sure the boot directory holds Debian's kernel and an initramfs with the
// current agent (l.Agent) as /init. The kernel package is downloaded once into cacheDir; the
// initramfs is rebuilt only when the agent changed.
func (l *Lab) PrepareAssets(ctx context.Context, cacheDir string) error {
	if err := os.MkdirAll(l.BootDir(), 0o755); err != nil {
		return err
	}
	sum, err := fileSHA256(l.Agent)
	if err != nil {
		return fmt.Errorf("lab: the agent program (scripts/build.sh builds bin/%s beside bin/imaged): %w", AgentProgram, err)
	}
	stamp := filepath.Join(l.BootDir(), "initrd.img.agent-sha256")
	if old, _ := os.ReadFile(stamp); string(old) == sum && exists(filepath.Join(l.BootDir(), "vmlinuz")) && exists(filepath.Join(l.BootDir(), "initrd.img")) {
		return nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	// The last build is kept in the cache too, by agent: a new chassis for the same agent copies
	// it instead of building again.
	built := filepath.Join(cacheDir, "built", sum)
	if exists(filepath.Join(built, "initrd.img")) && exists(filepath.Join(built, "vmlinuz")) {
		for _, f := range []string{"initrd.img", "vmlinuz"} {
			if err := copyFile(filepath.Join(built, f), filepath.Join(l.BootDir(), f)); err != nil {
				return err
			}
		}
		l.printf("lab: agent initramfs for this agent taken from %s", built)
		return atomicfile.WriteFile(stamp, []byte(sum), 0o644)
	}
	l.printf("lab: building the agent's initramfs from Debian's kernel package (kept in %s)", cacheDir)
	deb, err := initrd.DownloadKernel(ctx, cacheDir)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := initrd.Build(ctx, initrd.Options{
		Binary:      l.Agent,
		Program:     initrd.AgentProgram,
		Modules:     initrd.ModuleSource{Deb: deb},
		ModuleNames: []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "e1000", "button", "evdev"},
		Compression: "zstd",
		Output:      filepath.Join(l.BootDir(), "initrd.img"),
		KernelOut:   filepath.Join(l.BootDir(), "vmlinuz"),
	})
	if err != nil {
		return err
	}
	l.printf("lab: built initrd.img (%d modules, %.1f MiB, kernel %s) in %s", len(res.Modules), float64(res.Size)/(1<<20), res.KernelVersion, time.Since(start).Round(time.Millisecond))
	// Keep only this binary's build in the cache.
	os.RemoveAll(filepath.Join(cacheDir, "built"))
	if err := os.MkdirAll(built, 0o755); err == nil {
		for _, f := range []string{"initrd.img", "vmlinuz"} {
			if err := copyFile(filepath.Join(l.BootDir(), f), filepath.Join(built, f)); err != nil {
				l.printf("lab: cannot keep %s in the cache: %v", f, err)
			}
		}
	}
	return atomicfile.WriteFile(stamp, []byte(sum), 0o644)
}

// Config is what WriteConfig needs to know.
type Config struct {
	Mode      string // server or proxy
	Blades    []Blade
	LogLevel  string
	UEFIFile  string  // ipxe.efi (default) or snponly.efi
	IPXEDir   string  // boot.ipxe_dir: where imaged copies the boot programs from (default Debian's /usr/lib/ipxe)
	IPXEHTTPS bool    // http.tls.ipxe_https: an iPXE that advertises HTTPS gets the https script URL
	NoTFTP    bool    // turn TFTP off (UEFI firmware then falls back to UEFI HTTP boot)
	BMC       *BMCRef // the chassis BMC every blade is behind, if any
	ExtraYAML string  // appended as is
}

// BMCRef is how imaged reaches the lab's Redfish emulator.
type BMCRef struct {
	Name, URL, CAFile, Credentials string
}

// WriteConfig writes the daemon's config file and returns its path.
func (l *Lab) WriteConfig(c Config) (string, error) {
	if c.LogLevel == "" {
		c.LogLevel = "debug"
	}
	if c.UEFIFile == "" {
		c.UEFIFile = "ipxe.efi"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nstate_dir: %s\nlog: {level: %s}\n", filepath.Join(l.Dir, "state"), c.LogLevel)
	// TLS on, as in production: the agents of the end-to-end tests pin imaged's certificate.
	fmt.Fprintf(&b, "http: {listen: %s:%d, tls: {listen: %s:%d, ipxe_https: %t}}\n", ServerIP, HTTPPort, ServerIP, HTTPSPort, c.IPXEHTTPS)
	// The lab's API is read without a token (from the host, through the lab's namespace only);
	// changes go through the control socket.
	b.WriteString("api: {anonymous_read: true}\n")
	switch c.Mode {
	case "proxy":
		fmt.Fprintf(&b, "dhcp:\n  mode: proxy\n  interface: veth-srv\n  server_ip: %s\n", ServerIP)
		b.WriteString("  router_advertisements: {enabled: true, prefix: fd99::/64}\n")
	default:
		fmt.Fprintf(&b, "dhcp:\n  mode: server\n  interface: veth-srv\n  server_ip: %s\n  subnet: 10.99.0.0/24\n", ServerIP)
		b.WriteString("  pool: {start: 10.99.0.100, end: 10.99.0.200}\n  router_advertisements: {enabled: true, prefix: fd99::/64}\n")
	}
	if c.NoTFTP {
		b.WriteString("tftp: {enabled: false}\n")
	} else {
		fmt.Fprintf(&b, "tftp: {listen: %s:69}\n", ServerIP)
	}
	fmt.Fprintf(&b, "boot:\n  assets_dir: %s\n  uefi_file: %s\n  agent: {kernel: vmlinuz, initrd: initrd.img, cmdline: console=ttyS0}\n", l.BootDir(), c.UEFIFile)
	if c.IPXEDir != "" {
		fmt.Fprintf(&b, "  ipxe_dir: %s\n", c.IPXEDir)
	}
	if c.BMC != nil {
		fmt.Fprintf(&b, "bmcs:\n  - name: %s\n    url: %s\n    ca_file: %s\n    credentials: %s\n", c.BMC.Name, c.BMC.URL, c.BMC.CAFile, c.BMC.Credentials)
		// Reimage jobs on QEMU blades under TCG: an emulated BMC that answers at once, a netboot
		// of 10-25 s, a 256 MiB write in about 10 s, an OS boot of a minute or two.
		b.WriteString("jobs:\n  timeouts: {fencing: 30s, boot-set: 30s, powering-on: 30s, netbooting: 3m, writing: 10m, rebooting: 1m, booting-os: 5m}\n")
		b.WriteString("  agent_silence: 30s\n  per_chassis: 4\n")
	}
	b.WriteString("machines:\n")
	for i, bl := range c.Blades {
		fmt.Fprintf(&b, "  - id: %s\n    macs: [%s]\n    chassis: lab\n    slot: %d\n    worker_group: lab\n    worker_type: qemu-%s\n    boot: agent\n", bl.ID, bl.MAC, i+1, bl.Firmware)
		if c.BMC != nil {
			fmt.Fprintf(&b, "    bmc: %s\n", c.BMC.Name)
		}
		if bl.IP != "" && c.Mode != "proxy" {
			fmt.Fprintf(&b, "    ip: %s\n", bl.IP)
		}
	}
	b.WriteString(c.ExtraYAML)
	path := filepath.Join(l.Dir, "imaged.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// Up creates the network. A lab with the same prefix left over from an interrupted run is
// removed first.
func (l *Lab) Up() error {
	if l.Net.Exists() {
		l.printf("lab: removing namespaces left over from an earlier run (%s, %s)", l.Net.Srv(), l.Net.Cli())
		l.Net.Down()
	}
	return l.Net.Up()
}

// StartDaemon runs `imaged serve` inside the server namespace and waits until /healthz answers.
func (l *Lab) StartDaemon(ctx context.Context, configPath string) error {
	logf, err := os.Create(filepath.Join(l.Dir, "imaged.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", l.Net.Srv(), l.Imaged, "serve", "-config", configPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("lab: start imaged: %w", err)
	}
	l.daemon, l.daemonDone = cmd, make(chan error, 1)
	go func() { l.daemonDone <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var h struct{ Status string }
		if err := l.get(ctx, "/healthz", &h); err == nil && h.Status == "ok" {
			return nil
		}
		select {
		case err := <-l.daemonDone:
			l.daemonDone <- err
			log, _ := os.ReadFile(filepath.Join(l.Dir, "imaged.log"))
			return fmt.Errorf("lab: imaged exited at start-up (%v):\n%s", err, log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("lab: imaged did not answer /healthz within 20 s; see " + filepath.Join(l.Dir, "imaged.log"))
		}
	}
}

// StopDaemon stops imaged with SIGTERM (it drains) and waits, killing it after 20 s.
func (l *Lab) StopDaemon() error {
	if l.daemon == nil {
		return nil
	}
	_ = l.daemon.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-l.daemonDone:
	case <-time.After(20 * time.Second):
		_ = l.daemon.Process.Kill()
		err = fmt.Errorf("lab: imaged did not stop within 20 s of SIGTERM: %v", <-l.daemonDone)
	}
	l.daemon = nil
	return err
}

// Close stops the daemon and removes the network.
func (l *Lab) Close() {
	_ = l.StopDaemon()
	l.Net.Down()
}

// get fetches a JSON document: /healthz from the plain listener, the rest over HTTPS,
// trusting the certificate imaged made for itself.
func (l *Lab) get(ctx context.Context, path string, v any) error {
	base, client := HTTPSURL(), l.client
	if path == "/healthz" {
		base = BaseURL()
	} else {
		pem, err := os.ReadFile(CertFile(l.Dir))
		if err != nil {
			return fmt.Errorf("lab: imaged's certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("lab: %s holds no certificate", CertFile(l.Dir))
		}
		client = &http.Client{Timeout: l.client.Timeout, Transport: &http.Transport{DialContext: Dialer(l.Net.Srv()),
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		defer client.CloseIdleConnections()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Get fetches a JSON document from the lab's imaged.
func (l *Lab) Get(ctx context.Context, path string, v any) error { return l.get(ctx, path, v) }

// Boot starts a blade on a new tap.
func (l *Lab) Boot(ctx context.Context, b Blade) (*Running, error) {
	tap, err := l.Net.AddTap()
	if err != nil {
		return nil, err
	}
	vm := &VM{Name: b.ID, Netns: l.Net.Cli(), Tap: tap, MAC: b.MAC, Firmware: b.Firmware, NIC: b.NIC, NoROM: b.NoROM, Disk: b.Disk, Dir: l.Dir}
	if b.HTTPSCACerts != "" {
		pemData, err := os.ReadFile(b.HTTPSCACerts)
		if err != nil {
			return nil, fmt.Errorf("lab: %s's HTTPS CA certificates: %w", b.ID, err)
		}
		esl, err := EDK2CACerts(pemData)
		if err != nil {
			return nil, fmt.Errorf("lab: %s's HTTPS CA certificates (%s): %w", b.ID, b.HTTPSCACerts, err)
		}
		vm.HTTPSCACerts = filepath.Join(l.Dir, b.ID+".https-cacerts.esl")
		if err := os.WriteFile(vm.HTTPSCACerts, esl, 0o644); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
	}
	return vm.Start(ctx)
}

// WaitHello polls imaged until machine id has an agent hello newer than since.
func (l *Lab) WaitHello(ctx context.Context, id string, since time.Time, vm *Running) (machines.Machine, error) {
	for {
		var m machines.Machine
		err := l.get(ctx, "/api/v1/machines/"+id, &m)
		if err == nil && m.LastHello != nil && m.LastHello.Time.After(since) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("lab: no agent hello from %s: %w (console: %s, daemon log: %s)", id, ctx.Err(), vm.LogPath(), filepath.Join(l.Dir, "imaged.log"))
		case <-vm.Done():
			return m, fmt.Errorf("lab: %s powered off before its agent said hello (console: %s)", id, vm.LogPath())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Events returns a machine's timeline from imaged.
func (l *Lab) Events(ctx context.Context, id string) ([]machines.Event, error) {
	var ev []machines.Event
	return ev, l.get(ctx, "/api/v1/machines/"+id+"/events", &ev)
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Run runs the lab's imaged binary with args (in the host namespace: for commands that only
// touch the state directory, such as image import) and returns its output.
func (l *Lab) Run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, l.Imaged, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: imaged %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
