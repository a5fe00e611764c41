// Package agent is the code that runs on the blade, inside the netboot initramfs that
// internal/initrd builds: as PID 1 it mounts the basic filesystems, loads the kernel modules,
// brings up the NIC that netbooted, gets an address by DHCP and says hello to the imaged server,
// then waits for work. Its init can run another Mode instead (imaged.mode=, see RunInit), which
// may reuse its NIC setup (ConfigureNIC).
//
// Its dependency set ships in the initramfs, so it must stay small: no bbolt, AWS SDK, gofish,
// Prometheus, nor any imaged server package (TestAgentDeps guards this, and cmd/imaged-agent's
// TestDeps the whole program). cmd/imaged-agent (the initramfs's /init), the lab's
// imaged-labos-init and its init mode (internal/lab/labos/osinit) import it.
//
// Every milestone is one console line starting with "imaged agent: ", which the lab timeline
// greps for; keep that prefix stable.
package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/imaged/imaged/internal/version"
)

// VendorClass is option 60 in the agent's DHCP requests, so that a DHCP server can tell the agent
// (which wants a plain lease) from the firmware and iPXE (which want boot files).
const VendorClass = "imaged-agent"

// Config is what the agent needs to know; on a blade it comes from the kernel command line
// (ParseCmdline). Zero durations take the defaults shown.
type Config struct {
	Server *url.URL // imaged.server: base URL of the imaged server, e.g. https://10.99.0.1:8443
	// TLSPin is imaged.tls_sha256: the SHA-256 of the certificate the server must present when
	// Server is https. It is the only check: the initramfs holds no CA and the blade's clock is
	// not trusted.
	TLSPin  []byte
	Token   string           // imaged.token: the job's secret, sent with hello
	MAC     net.HardwareAddr // imaged.mac: the NIC that netbooted (iPXE's ${net0/mac})
	Modules bool             // load /modules.order at boot; imaged.modules=0 turns it off
	Debug   bool             // imaged.debug=1: debug logging

	AgentVersion string    // reported in hello; default: from the build info
	Console      io.Writer // milestone lines; default os.Stdout
	ResolvConf   string    // if set, write the DHCP DNS servers here (RunInit: /etc/resolv.conf)

	LinkTimeout      time.Duration // wait for the NIC to appear: 10 s
	CarrierTimeout   time.Duration // wait for carrier before trying DHCP anyway: 30 s
	DHCPTimeout      time.Duration // all DHCP attempts together: 2 min
	HelloTimeout     time.Duration // all hello attempts together: 5 min
	HelloAttempt     time.Duration // one hello request: 10 s
	HelloBackoff     time.Duration // first wait between hello attempts, doubling: 1 s
	HelloBackoffMax  time.Duration // longest wait between hello attempts: 30 s
	DHCPAttemptRetry int           // DISCOVER/REQUEST sends per DHCP attempt (timeouts 1, 2, 4 s…): 3
	PlanPoll         time.Duration // between plan requests while no image is assigned: 5 s
	SysBlock         string        // where whole disks are listed: /sys/block
	DevDir           string        // where their device nodes are: /dev

	vendorClass string // DHCP option 60: VendorClass, unless ConfigureNIC's caller says otherwise
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LinkTimeout, 10*time.Second)
	def(&c.CarrierTimeout, 30*time.Second)
	def(&c.DHCPTimeout, 2*time.Minute)
	def(&c.HelloTimeout, 5*time.Minute)
	def(&c.HelloAttempt, 10*time.Second)
	def(&c.HelloBackoff, time.Second)
	def(&c.HelloBackoffMax, 30*time.Second)
	def(&c.PlanPoll, 5*time.Second)
	if c.SysBlock == "" {
		c.SysBlock = "/sys/block"
	}
	if c.DevDir == "" {
		c.DevDir = "/dev"
	}
	if c.DHCPAttemptRetry <= 0 {
		c.DHCPAttemptRetry = 3
	}
	if c.AgentVersion == "" {
		c.AgentVersion = buildVersion()
	}
	if c.vendorClass == "" {
		c.vendorClass = VendorClass
	}
}

// ParseCmdline reads the agent's parameters from a kernel command line (/proc/cmdline):
//
//	imaged.server=https://10.99.0.1:8443 imaged.tls_sha256=<hex> imaged.token=… imaged.mac=52:54:00:12:34:56
//
// (imaged.tls_sha256 only with an https server) and optionally imaged.modules=0 and
// imaged.debug=1. Values may be double-quoted, as the kernel
// allows; everything after " -- " belongs to init's argv and is ignored. Unknown words are other
// programs' business and are ignored too.
func ParseCmdline(cmdline string) (Config, error) {
	cfg := Config{Modules: true}
	var have = map[string]bool{}
	for _, w := range splitCmdline(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		if !strings.HasPrefix(k, "imaged.") {
			continue
		}
		have[k] = true
		switch k {
		case "imaged.server":
			u, err := url.Parse(v)
			if err != nil {
				return Config{}, fmt.Errorf("agent: imaged.server=%q is not a URL such as http://10.99.0.1:8080: %w", v, err)
			}
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return Config{}, fmt.Errorf("agent: imaged.server=%q: want http://host[:port] or https://host[:port]", v)
			}
			cfg.Server = u
		case "imaged.tls_sha256":
			pin, err := ParsePin(v)
			if err != nil {
				return Config{}, fmt.Errorf("agent: imaged.tls_sha256=%q: %w", v, err)
			}
			cfg.TLSPin = pin
		case "imaged.token":
			cfg.Token = v
		case "imaged.mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return Config{}, fmt.Errorf("agent: imaged.mac=%q is not an Ethernet MAC address such as 52:54:00:12:34:56", v)
			}
			cfg.MAC = mac
		case "imaged.modules":
			b, err := parseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("agent: imaged.modules=%q: %w", v, err)
			}
			cfg.Modules = b
		case "imaged.debug":
			b, err := parseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("agent: imaged.debug=%q: %w", v, err)
			}
			cfg.Debug = b
		}
	}
	var missing []string
	for _, k := range []string{"imaged.server", "imaged.token", "imaged.mac"} {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("agent: kernel command line lacks %s (have %q)", strings.Join(missing, ", "), redact(cmdline))
	}
	if cfg.Token == "" {
		return Config{}, fmt.Errorf("agent: imaged.token is empty")
	}
	if err := cfg.validateTLS(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// splitCmdline splits like the kernel's next_arg(): on spaces, except inside double quotes,
// which are removed; it stops at "--".
func splitCmdline(s string) []string {
	var (
		out     []string
		cur     strings.Builder
		quote   bool
		started bool
	)
	flush := func() {
		if started {
			out = append(out, cur.String())
		}
		cur.Reset()
		started = false
	}
	for _, r := range s {
		switch {
		case r == '"':
			quote = !quote
			started = true
		case !quote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
			if n := len(out); n > 0 && out[n-1] == "--" {
				return out[:n-1]
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	flush()
	if n := len(out); n > 0 && out[n-1] == "--" {
		out = out[:n-1]
	}
	return out
}

func parseBool(v string) (bool, error) {
	switch v {
	case "1", "y", "yes", "true", "on", "":
		return true, nil
	case "0", "n", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("want 0 or 1")
}

// redact hides the token's value in a command line quoted in an error.
func redact(cmdline string) string {
	ws := splitCmdline(cmdline)
	for i, w := range ws {
		if strings.HasPrefix(w, "imaged.token=") {
			ws[i] = "imaged.token=<redacted>"
		}
	}
	return strings.Join(ws, " ")
}

// buildVersion is the agent's version: the binary's, set at build time (see internal/version).
func buildVersion() string { return version.Version }

func (c *Config) validate() error {
	switch {
	case c.Server == nil:
		return errors.New("agent: no server URL (imaged.server)")
	case len(c.MAC) == 0:
		return errors.New("agent: no MAC address (imaged.mac)")
	case c.Token == "":
		return errors.New("agent: no token (imaged.token)")
	}
	return c.validateTLS()
}
