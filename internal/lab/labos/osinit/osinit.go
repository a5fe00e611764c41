// Package osinit is the "os" mode of imaged's init: the OS of the images that
// internal/lab/labos builds. agent.RunInit runs it as PID 1, after the same early init as the
// agent (mounts, console, modules), when the kernel command line says imaged.mode=os (Mode).
// Run then hashes the first imaged.image_size bytes of the boot disk, brings up the NIC by DHCP
// (with the agent's code), prints imaged's metadata for the machine, checks in with the digest
// and serves the readiness probe; it never mounts or writes the disk. See internal/lab/labos for
// the contract with imaged.
//
// It is the /init of the lab's images (internal/lab/cmd/imaged-labos-init), never of the agent's
// initramfs; its dependencies are held to the agent's rules all the same (TestOSInitDeps). Only
// that command and tests import it.
//
// Every milestone is one console line starting with "imaged os: "; tests grep for it.
package osinit

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos"
)

// Prefix starts every milestone line of the os mode on the console.
const Prefix = "imaged os: "

// Config is what the os mode needs to know; at boot it comes from the kernel command line
// (ParseCmdline). Zero durations take the defaults shown.
type Config struct {
	URL       *url.URL         // imaged.url: base URL of imaged, e.g. http://10.99.0.1:8080
	ImageSize int64            // imaged.image_size: how many bytes of the disk the image is
	Disk      string           // imaged.disk: the boot disk, e.g. /dev/vda; default: the only disk
	MAC       net.HardwareAddr // imaged.mac: the NIC to use; default: the only Ethernet NIC
	ReadyPort int              // imaged.ready_port: the readiness probe's TCP port; default 2222

	Console io.Writer // milestone lines; default os.Stdout

	DiskTimeout     time.Duration // wait for the disk to appear: 30 s
	LinkTimeout     time.Duration // wait for the NIC to appear: 30 s
	DHCPTimeout     time.Duration // all DHCP attempts together: the agent's default (2 min)
	RequestTimeout  time.Duration // one HTTP request: 10 s
	MetadataTimeout time.Duration // all metadata attempts together, then check in anyway: 1 min
	RetryBackoff    time.Duration // first wait between attempts, doubling: 1 s
	RetryBackoffMax time.Duration // longest wait between attempts (plus up to 20% jitter): 30 s
	SysBlock        string        // where whole disks are listed: /sys/block
	DevDir          string        // where their device nodes are: /dev
	VendorClass     string        // DHCP option 60: "imaged-os"
	ResolvConf      string        // where to write the lease's DNS servers, if set
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DiskTimeout, 30*time.Second)
	def(&c.LinkTimeout, 30*time.Second)
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.MetadataTimeout, time.Minute)
	def(&c.RetryBackoff, time.Second)
	def(&c.RetryBackoffMax, 30*time.Second)
	if c.ReadyPort == 0 {
		c.ReadyPort = labos.DefaultReadyPort
	}
	if c.SysBlock == "" {
		c.SysBlock = "/sys/block"
	}
	if c.DevDir == "" {
		c.DevDir = "/dev"
	}
	if c.VendorClass == "" {
		c.VendorClass = "imaged-os"
	}
}

// ParseCmdline reads the os mode's parameters from a kernel command line (/proc/cmdline):
//
//	imaged.mode=os imaged.url=http://10.99.0.1:8080 imaged.image_size=67108864
//
// and optionally imaged.ready_port=2222, imaged.disk=/dev/vda and imaged.mac=52:54:00:12:34:56.
// Values may be double-quoted; words after " -- " and other programs' words are ignored, and so
// are imaged.mode, imaged.modules and imaged.debug (agent.RunInit reads them). A repeated
// parameter takes its last value, as the kernel does.
func ParseCmdline(cmdline string) (Config, error) {
	var cfg Config
	have := map[string]bool{}
	for _, w := range agent.SplitCmdline(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		if !strings.HasPrefix(k, "imaged.") {
			continue
		}
		have[k] = true
		switch k {
		case "imaged.url":
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
				return Config{}, fmt.Errorf("osinit: imaged.url=%q: want http://host[:port] or https://host[:port], such as http://10.99.0.1:8080", v)
			}
			cfg.URL = u
		case "imaged.image_size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return Config{}, fmt.Errorf("osinit: imaged.image_size=%q: want the image's size in bytes, a positive decimal number such as 67108864", v)
			}
			cfg.ImageSize = n
		case "imaged.ready_port":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return Config{}, fmt.Errorf("osinit: imaged.ready_port=%q: want a TCP port, 1 to 65535", v)
			}
			cfg.ReadyPort = n
		case "imaged.disk":
			if !strings.HasPrefix(v, "/dev/") || len(v) == len("/dev/") || strings.Contains(v, "..") {
				return Config{}, fmt.Errorf("osinit: imaged.disk=%q: want a whole disk's device node, such as /dev/vda", v)
			}
			cfg.Disk = v
		case "imaged.mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return Config{}, fmt.Errorf("osinit: imaged.mac=%q is not an Ethernet MAC address such as 52:54:00:12:34:56", v)
			}
			cfg.MAC = mac
		}
	}
	var missing []string
	for _, k := range []string{"imaged.url", "imaged.image_size"} {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("osinit: kernel command line lacks %s (have %q)", strings.Join(missing, " and "), cmdline)
	}
	return cfg, nil
}

func (c *Config) validate() error {
	switch {
	case c.URL == nil:
		return fmt.Errorf("osinit: no imaged URL (imaged.url)")
	case c.ImageSize <= 0:
		return fmt.Errorf("osinit: no image size (imaged.image_size)")
	case c.ReadyPort < 0 || c.ReadyPort > 65535:
		return fmt.Errorf("osinit: ready port %d out of range", c.ReadyPort)
	}
	return nil
}
