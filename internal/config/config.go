// Package config reads imaged's versioned YAML config file into typed values.
//
// Decoding is strict: an unknown key, a value of the wrong kind or an inconsistent setting stops
// start-up with the file, the line, the key and the fix. Only cmd/imaged imports this package; it
// maps these values onto each component's own Config.
package config

import (
	"net/netip"
	"time"
)

// CurrentVersion is the config format this binary reads.
const CurrentVersion = 1

// File is the whole config file, version 1.
type File struct {
	Version  int       `yaml:"version"`
	StateDir string    `yaml:"state_dir"`
	Log      Log       `yaml:"log"`
	HTTP     HTTP      `yaml:"http"`
	API      API       `yaml:"api"`
	DHCP     DHCP      `yaml:"dhcp"`
	TFTP     TFTP      `yaml:"tftp"`
	Boot     Boot      `yaml:"boot"`
	BMCs     []BMC     `yaml:"bmcs"`
	Jobs     Jobs      `yaml:"jobs"`
	Images   Images    `yaml:"images"`
	Machines []Machine `yaml:"machines"`
	EC2      EC2       `yaml:"ec2"`
}

// Images tunes the blob store under <state_dir>/images.
type Images struct {
	// UnregisteredGrace is how long a blob no catalog image references is kept before the daemon
	// removes it: what an import killed between committing its blob and registering it left.
	// It is the time an import has between the two (milliseconds, normally). Default 1h.
	UnregisteredGrace Duration `yaml:"unregistered_grace"`
}

// API is who may use the operator API over TCP. The control socket needs no token.
type API struct {
	// Tokens are bearer tokens, stored as their SHA-256 (`imaged token new` makes one).
	Tokens []APIToken `yaml:"tokens"`
	// AnonymousRead lets callers without a token read (machines, images, jobs, events); off by
	// default.
	AnonymousRead bool `yaml:"anonymous_read"`
	// CORSOrigins may call the API from a browser (exact origins, like https://dash.example).
	CORSOrigins []string `yaml:"cors_origins"`
}

// APIToken is one bearer token: its name goes into every change it makes.
type APIToken struct {
	Name   string `yaml:"name"`
	Scope  string `yaml:"scope"`  // read, operate or admin
	SHA256 string `yaml:"sha256"` // hex SHA-256 of the token; the token itself is never stored
}

// EC2 is where `imaged ami` publishes the catalog's images as AMIs. Credentials come from the
// AWS SDK's default chain (environment, shared files, SSO, instance role), never from here.
type EC2 struct {
	Region   string   `yaml:"region"`   // pushed to; default the SDK's (AWS_REGION, ~/.aws/config)
	CopyTo   []string `yaml:"copy_to"`  // copied into, after the push
	Endpoint string   `yaml:"endpoint"` // an EC2/EBS/S3-compatible endpoint instead of AWS's (private clouds, tests)
	Workers  int      `yaml:"workers"`  // blocks in flight (64)
	// Contract is the published amis.json, s3://bucket/key: per image, channel → AMI per region.
	Contract string   `yaml:"contract"`
	Keep     int      `yaml:"keep"` // ami prune keeps the newest (10), and whatever a channel points at
	Smoke    EC2Smoke `yaml:"smoke"`
}

// EC2Smoke is how `imaged ami smoke` launches a test instance by default.
type EC2Smoke struct {
	Subnet         string   `yaml:"subnet"`
	SecurityGroups []string `yaml:"security_groups"`
	InstanceType   string   `yaml:"instance_type"` // t3.micro
	Probe          string   `yaml:"probe"`         // tcp:22 or http://:PORT/PATH
	ReportDir      string   `yaml:"report_dir"`    // <state_dir>/smoke
}

// Jobs tunes the reimage jobs. Zero values take the defaults for real hardware.
type Jobs struct {
	// Timeouts per phase (queued, fencing, boot-set, powering-on, netbooting, writing,
	// verifying, rebooting, booting-os, ready, stopping), replacing the defaults given.
	Timeouts     map[string]Duration `yaml:"timeouts"`
	AgentSilence Duration            `yaml:"agent_silence"` // a writing agent silent this long is lost (3m)
	PerChassis   int                 `yaml:"per_chassis"`   // reimages at once per chassis (8)
	LinkMbps     int64               `yaml:"link_mbps"`     // the link to the blades, for admission and ETAs (10000)
	Probe        *Probe              `yaml:"probe"`         // readiness; default: the OS checks in with its digest
	// LeaveFailedOn leaves a machine whose write failed in the agent for inspection instead of
	// powering it off.
	LeaveFailedOn bool `yaml:"leave_failed_on"`
	// ReimageStale reimages a machine (with its assigned image) when its OS checks in with
	// another image: a machine never keeps running what it should not.
	ReimageStale bool `yaml:"reimage_stale"`
}

// Disk names the disk the agent writes, by serial number or by /dev/disk/by-path name.
type Disk struct {
	Serial string `yaml:"serial"`
	ByPath string `yaml:"by_path"` // like pci-0000:00:1f.2-ata-1
}

// Probe is a readiness check against a machine's address after it booted its new image.
type Probe struct {
	Kind    string `yaml:"kind"` // tcp or http
	Port    int    `yaml:"port"`
	Path    string `yaml:"path"`     // http; default /
	Status  int    `yaml:"status"`   // http; default 200
	CheckIn bool   `yaml:"check_in"` // also require the OS's check-in with the image digest
}

// JobPhases are the phases jobs.timeouts may name.
var JobPhases = []string{"queued", "fencing", "boot-set", "powering-on", "netbooting", "writing", "verifying", "rebooting", "booting-os", "ready", "stopping"}

// BMC is one Redfish service: a blade's own BMC, or a chassis manager fronting many systems
// (a Moonshot chassis manager fronts 45 cartridges).
type BMC struct {
	Name string `yaml:"name"` // what machines[].bmc refers to
	URL  URL    `yaml:"url"`  // the service root's host, https://10.0.0.5 (plain http only with insecure)
	// Credentials is a file holding "username: …" and "password: …" lines (mode 0600, never
	// logged). Without it, $IMAGED_BMC_USERNAME and $IMAGED_BMC_PASSWORD are used.
	Credentials   string   `yaml:"credentials"`
	CAFile        string   `yaml:"ca_file"`     // PEM CA(s) the BMC's certificate must chain to; default the system's
	Fingerprint   string   `yaml:"fingerprint"` // or pin the certificate: SHA-256 of its DER, hex
	Insecure      bool     `yaml:"insecure"`    // skip TLS verification (and allow http://): only for labs
	Timeout       Duration `yaml:"timeout"`     // per call; default 10s
	MaxConcurrent int      `yaml:"max_concurrent"`
}

// Log selects the level and format of the daemon's log on standard error.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// HTTP is the plain listener (boot scripts and assets for firmware that cannot do TLS, the
// booted OS's metadata and check-in, /metrics, /healthz) and the HTTPS one (the API, the agent
// API, images).
type HTTP struct {
	// Listen defaults to <dhcp.server_ip>:8080: the provisioning interface only.
	Listen    AddrPort `yaml:"listen"`
	PublicURL URL      `yaml:"public_url"` // how blades reach this server; default http://<dhcp.server_ip>:<port>
	TLS       TLS      `yaml:"tls"`
	// ControlSocket is a Unix socket (mode 0600) serving the same API to root and imaged's own
	// user with the admin scope: how the CLI changes the catalog while the daemon runs.
	// Default <state_dir>/control.sock.
	ControlSocket string     `yaml:"control_socket"`
	Limits        HTTPLimits `yaml:"limits"`
}

// TLS is the HTTPS listener: /api/v1, /agent/v1 and /images/ are served there only (the plain
// listener answers them with an error naming the https URL), so that operator and boot tokens,
// plans and results never cross the network in clear.
type TLS struct {
	Enabled   *bool    `yaml:"enabled"`    // default on
	Listen    AddrPort `yaml:"listen"`     // default <http.listen's host>:8443
	PublicURL URL      `yaml:"public_url"` // default https://<http.public_url's host>:<port>
	// CertFile and KeyFile are the operator's certificate (PEM, intermediates after the leaf)
	// and key; without them imaged makes a self-signed certificate at its first start and keeps
	// it in <state_dir>/tls.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// IPXEHTTPS says that the iPXE imaged hands out trusts this certificate (built with
	// TRUST=): an iPXE that advertises HTTPS (DHCP option 175.20) then gets its script, and
	// the agent's kernel and initramfs, over HTTPS.
	IPXEHTTPS bool `yaml:"ipxe_https"`
}

// HTTPLimits bound what clients may hold of the HTTP listeners (internal/httplimit). Zero
// values take the defaults shown.
type HTTPLimits struct {
	Connections           int      `yaml:"connections"`              // open at once over the TCP listeners (1024)
	ConnectionsPerClient  int      `yaml:"connections_per_client"`   // … from one client address (32)
	EventStreams          int      `yaml:"event_streams"`            // GET /api/v1/events at once (64)
	EventStreamsPerClient int      `yaml:"event_streams_per_client"` // … from one client address (4)
	ReadTimeout           Duration `yaml:"read_timeout"`             // request headers, and then a body, must arrive within (10s)
	WriteTimeout          Duration `yaml:"write_timeout"`            // an answer, or one event of a stream, must be taken within (10s)
	TransferStall         Duration `yaml:"transfer_stall"`           // a blob or asset download moving no byte this long is cut (30s)
}

// DHCP configures the DHCP server, proxyDHCP or neither.
type DHCP struct {
	Mode                 string   `yaml:"mode"` // server, proxy, off
	Interface            string   `yaml:"interface"`
	ServerIP             Addr     `yaml:"server_ip"`
	Subnet               Prefix   `yaml:"subnet"`
	Router               Addr     `yaml:"router"`
	DNS                  []Addr   `yaml:"dns"`
	DomainName           string   `yaml:"domain_name"`
	Pool                 *Pool    `yaml:"pool"`
	LeaseTime            Duration `yaml:"lease_time"`
	UnknownClients       string   `yaml:"unknown_clients"` // ignore, lease, netboot
	RouterAdvertisements RA       `yaml:"router_advertisements"`
}

// Pool is a dynamic address range inside the subnet.
type Pool struct {
	Start Addr `yaml:"start"`
	End   Addr `yaml:"end"`
}

// RA makes imaged send IPv6 router advertisements on the DHCP interface so that iPXE's IPv6
// autoconfiguration ends at once instead of waiting about 13 s per iPXE stage.
type RA struct {
	Enabled  *bool    `yaml:"enabled"` // default: on in server mode
	Prefix   Prefix   `yaml:"prefix"`  // an on-link prefix of the interface, e.g. fd99::/64
	Interval Duration `yaml:"interval"`
}

// TFTP serves the network boot programs. Zero values take the TFTP server's defaults.
type TFTP struct {
	Enabled      *bool    `yaml:"enabled"`        // default on
	Listen       AddrPort `yaml:"listen"`         // default <dhcp.server_ip>:69
	MaxTransfers int      `yaml:"max_transfers"`  // transfers in flight (64)
	MaxPerClient int      `yaml:"max_per_client"` // transfers in flight from one address (4)
	MaxTimeout   Duration `yaml:"max_timeout"`    // longest RFC 2349 timeout a client may negotiate (5s)
}

// Boot says what blades load when they netboot.
type Boot struct {
	AssetsDir      string            `yaml:"assets_dir"` // kernel, initrd, custom files; TFTP and HTTP root
	IPXEDir        string            `yaml:"ipxe_dir"`   // Debian's ipxe package: /usr/lib/ipxe
	BIOSFile       string            `yaml:"bios_file"`
	UEFIFile       string            `yaml:"uefi_file"`
	ARM64File      string            `yaml:"arm64_file"`
	Agent          Agent             `yaml:"agent"`
	DefaultProfile string            `yaml:"default_profile"` // agent, local or a name in profiles
	Profiles       map[string]string `yaml:"profiles"`        // name → iPXE script template
	TokenTTL       Duration          `yaml:"token_ttl"`
}

// Agent is the netboot kernel and initramfs that run imaged's agent.
type Agent struct {
	Kernel  string `yaml:"kernel"`
	Initrd  string `yaml:"initrd"`
	Cmdline string `yaml:"cmdline"` // extra kernel parameters, e.g. console=ttyS0
}

// Machine is one blade of the inventory.
type Machine struct {
	ID          string `yaml:"id"`
	MACs        []MAC  `yaml:"macs"`
	IP          Addr   `yaml:"ip"`
	Hostname    string `yaml:"hostname"`
	Chassis     string `yaml:"chassis"`
	Slot        int    `yaml:"slot"` // the cartridge bay: 1 to 45 in a Moonshot 1500
	Node        int    `yaml:"node"` // the node within the cartridge: 1 to 4 (an m700 has 4, an m710x 1); default 1 with a slot
	WorkerGroup string `yaml:"worker_group"`
	WorkerType  string `yaml:"worker_type"`
	BMC         string `yaml:"bmc"`        // a bmcs[].name
	BMCSystem   string `yaml:"bmc_system"` // its Redfish System Id there; default: the system with one of macs
	Probe       *Probe `yaml:"probe"`      // readiness after a reimage; default jobs.probe
	Disk        Disk   `yaml:"disk"`       // the disk to write; default the only non-removable disk large enough
	Boot        string `yaml:"boot"`       // profile; default boot.default_profile
}

// Profiles every installation has; more are defined under boot.profiles.
const (
	ProfileAgent = "agent" // netboot imaged's agent
	ProfileLocal = "local" // boot the local disk
)

// DHCP modes.
const (
	ModeServer = "server"
	ModeProxy  = "proxy"
	ModeOff    = "off"
)

func (f *File) applyDefaults() {
	if f.StateDir == "" {
		f.StateDir = "/var/lib/imaged"
	}
	if f.Log.Level == "" {
		f.Log.Level = "info"
	}
	if f.Log.Format == "" {
		f.Log.Format = "text"
	}
	if f.DHCP.Mode == "" {
		f.DHCP.Mode = ModeOff
	}
	if f.DHCP.LeaseTime.Duration == 0 {
		f.DHCP.LeaseTime.Duration = time.Hour
	}
	if f.DHCP.UnknownClients == "" {
		f.DHCP.UnknownClients = "ignore"
	}
	if f.DHCP.RouterAdvertisements.Interval.Duration == 0 {
		f.DHCP.RouterAdvertisements.Interval.Duration = 10 * time.Second
	}
	if f.Boot.AssetsDir == "" {
		f.Boot.AssetsDir = f.StateDir + "/boot"
	}
	if f.HTTP.ControlSocket == "" {
		f.HTTP.ControlSocket = f.StateDir + "/control.sock"
	}
	f.HTTP.Limits.applyDefaults()
	if f.EC2.Workers == 0 {
		f.EC2.Workers = 64
	}
	if f.EC2.Keep == 0 {
		f.EC2.Keep = 10
	}
	if f.EC2.Smoke.InstanceType == "" {
		f.EC2.Smoke.InstanceType = "t3.micro"
	}
	if f.EC2.Smoke.ReportDir == "" {
		f.EC2.Smoke.ReportDir = f.StateDir + "/smoke"
	}
	if f.Boot.IPXEDir == "" {
		f.Boot.IPXEDir = "/usr/lib/ipxe"
	}
	if f.Boot.BIOSFile == "" {
		f.Boot.BIOSFile = "undionly.kpxe"
	}
	if f.Boot.UEFIFile == "" {
		f.Boot.UEFIFile = "ipxe.efi"
	}
	if f.Boot.Agent.Kernel == "" {
		f.Boot.Agent.Kernel = "vmlinuz"
	}
	if f.Boot.Agent.Initrd == "" {
		f.Boot.Agent.Initrd = "initrd.img"
	}
	if f.Boot.DefaultProfile == "" {
		f.Boot.DefaultProfile = ProfileLocal
	}
	if f.Boot.TokenTTL.Duration == 0 {
		f.Boot.TokenTTL.Duration = time.Hour
	}
	if f.Images.UnregisteredGrace.Duration == 0 {
		f.Images.UnregisteredGrace.Duration = time.Hour
	}
	for i := range f.Machines {
		if f.Machines[i].Boot == "" {
			f.Machines[i].Boot = f.Boot.DefaultProfile
		}
	}
}

func (l *HTTPLimits) applyDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.Connections, 1024)
	def(&l.ConnectionsPerClient, 32)
	def(&l.EventStreams, 64)
	def(&l.EventStreamsPerClient, 4)
	for _, d := range []struct {
		v *Duration
		d time.Duration
	}{{&l.ReadTimeout, 10 * time.Second}, {&l.WriteTimeout, 10 * time.Second}, {&l.TransferStall, 30 * time.Second}} {
		if d.v.Duration == 0 {
			d.v.Duration = d.d
		}
	}
}

// RAEnabled reports whether router advertisements are sent.
func (f *File) RAEnabled() bool {
	if f.DHCP.RouterAdvertisements.Enabled != nil {
		return *f.DHCP.RouterAdvertisements.Enabled
	}
	return f.DHCP.Mode == ModeServer
}

// TLSEnabled reports whether the HTTPS listener runs.
func (f *File) TLSEnabled() bool { return f.HTTP.TLS.Enabled == nil || *f.HTTP.TLS.Enabled }

// TFTPEnabled reports whether the TFTP server runs.
func (f *File) TFTPEnabled() bool { return f.TFTP.Enabled == nil || *f.TFTP.Enabled }

// ServerAddr is the address blades reach imaged at.
func (f *File) ServerAddr() netip.Addr { return f.DHCP.ServerIP.Addr }
