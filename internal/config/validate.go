package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"
)

type validator struct {
	file  string
	lines map[string]int
	errs  Errors
}

func (v *validator) fail(key, format string, args ...any) {
	line := v.lines[key]
	for k := key; line == 0 && k != ""; k = parent(k) {
		line = v.lines[k]
	}
	v.errs = append(v.errs, &Error{File: v.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func parent(k string) string {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '.' || k[i] == '[' {
			return k[:i]
		}
	}
	return ""
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

var machineID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func (v *validator) validate(f *File) {
	if !oneOf(f.Log.Level, "debug", "info", "warn", "error") {
		v.fail("log.level", "%q is not a level (use debug, info, warn or error)", f.Log.Level)
	}
	if !oneOf(f.Log.Format, "text", "json") {
		v.fail("log.format", "%q is not a format (use text or json)", f.Log.Format)
	}
	d := &f.DHCP
	switch d.Mode {
	case ModeServer, ModeProxy:
		if d.Interface == "" {
			v.fail("dhcp.interface", "is required in %s mode (the interface the blades' network is on)", d.Mode)
		}
		if !d.ServerIP.IsValid() || !d.ServerIP.Is4() {
			v.fail("dhcp.server_ip", "is required in %s mode: this host's IPv4 address on dhcp.interface", d.Mode)
		}
	case ModeOff:
	default:
		v.fail("dhcp.mode", "%q is not a mode (use server, proxy or off)", d.Mode)
	}
	if !oneOf(d.UnknownClients, "ignore", "lease", "netboot") {
		v.fail("dhcp.unknown_clients", "%q is not a policy (use ignore, lease or netboot)", d.UnknownClients)
	}
	if d.Mode == ModeServer {
		v.validateSubnet(f)
	}
	if f.RAEnabled() {
		p := d.RouterAdvertisements.Prefix
		if !p.IsValid() || !p.Addr().Is6() || p.Bits() != 64 {
			v.fail("dhcp.router_advertisements.prefix", "router advertisements need an IPv6 /64 prefix of dhcp.interface, like fd99::/64 (or set enabled: false)")
		}
		if d.Mode == ModeOff || d.Interface == "" {
			v.fail("dhcp.router_advertisements.enabled", "router advertisements need dhcp.interface (set enabled: false)")
		}
	}
	v.validateHTTP(f)
	// sockaddr_un holds 108 bytes with the terminating NUL (unix(7)).
	if len(f.HTTP.ControlSocket) > 107 {
		v.fail("http.control_socket", "%q is %d bytes; a Unix socket path can have at most 107: choose a shorter path", f.HTTP.ControlSocket, len(f.HTTP.ControlSocket))
	}
	if f.TFTPEnabled() && f.TFTP.Listen.IsZero() {
		if f.ServerAddr().IsValid() {
			f.TFTP.Listen = AddrPort{Host: f.ServerAddr().String(), Port: 69}
		} else {
			f.TFTP.Listen = AddrPort{Port: 69}
		}
	}
	v.validateTFTP(f)
	v.validateLimits(f)
	v.validateBoot(f)
	v.validatePaths(f)
	v.validateBMCs(f)
	v.validateAPI(f)
	v.validateJobs(f)
	if g := f.Images.UnregisteredGrace.Duration; g < time.Minute {
		v.fail("images.unregistered_grace", "%v is too short: an import registers its blob after committing it, and a blob collected in between fails the import; use 1m or more (default 1h)", g)
	}
	v.validateEC2(f)
	v.validateMachines(f)
}

func (v *validator) validateTFTP(f *File) {
	t := &f.TFTP
	// Each transfer in flight holds an OS thread while it waits for ACKs.
	if t.MaxTransfers < 0 || t.MaxTransfers > 1024 {
		v.fail("tftp.max_transfers", "%d is out of range (0 for the default 64, at most 1024)", t.MaxTransfers)
	}
	if t.MaxPerClient < 0 || t.MaxPerClient > 1024 {
		v.fail("tftp.max_per_client", "%d is out of range (0 for the default 4, at most 1024)", t.MaxPerClient)
	} else if t.MaxTransfers > 0 && t.MaxPerClient > t.MaxTransfers {
		v.fail("tftp.max_per_client", "%d is above tftp.max_transfers %d, so one host could take every slot (lower it: a PXE client needs 2 at once)", t.MaxPerClient, t.MaxTransfers)
	}
	// RFC 2349: "Valid values range between "1" and "255" seconds, inclusive."
	if d := t.MaxTimeout.Duration; d != 0 && (d < time.Second || d > 255*time.Second) {
		v.fail("tftp.max_timeout", "%s is out of range (0 for the default 5s, else 1s to 255s)", t.MaxTimeout)
	}
}

// validateHTTP fills in the listen addresses and URLs: the provisioning interface
// (dhcp.server_ip), not every interface, unless the file says otherwise.
func (v *validator) validateHTTP(f *File) {
	h := &f.HTTP
	if h.Listen.IsZero() {
		switch {
		case f.ServerAddr().IsValid():
			h.Listen = AddrPort{Host: f.ServerAddr().String(), Port: 8080}
		case h.PublicURL.URL != nil && isIP(h.PublicURL.Hostname()):
			h.Listen = AddrPort{Host: h.PublicURL.Hostname(), Port: 8080}
		case h.PublicURL.URL != nil:
			v.fail("http.listen", "is required when dhcp.server_ip is not set and http.public_url names a host, not an address: the address to listen on, like 10.99.0.1:8080")
		}
	}
	if h.PublicURL.URL == nil {
		if !f.ServerAddr().IsValid() {
			v.fail("http.public_url", "is required when dhcp.server_ip is not set: the URL blades reach this server at, like http://10.99.0.1:8080")
		} else {
			h.PublicURL.URL = &url.URL{Scheme: "http", Host: net.JoinHostPort(f.ServerAddr().String(), strconv.Itoa(int(h.Listen.Port)))}
		}
	}
	t := &h.TLS
	if !f.TLSEnabled() {
		if t.IPXEHTTPS {
			v.fail("http.tls.ipxe_https", "needs the HTTPS listener (http.tls.enabled: true)")
		}
		return
	}
	if h.PublicURL.URL != nil && h.PublicURL.Scheme == "https" {
		v.fail("http.public_url", "%s: this is the plain listener's URL (what firmware that cannot do TLS fetches); the HTTPS one is http.tls.public_url", h.PublicURL)
	}
	if t.Listen.IsZero() {
		t.Listen = AddrPort{Host: h.Listen.Host, Port: 8443}
	}
	if t.Listen == h.Listen && t.Listen.Port != 0 { // port 0: the kernel picks two ports
		v.fail("http.tls.listen", "%s is http.listen too: give the HTTPS listener its own port, like %s", t.Listen, net.JoinHostPort(t.Listen.Host, "8443"))
	}
	switch {
	case t.PublicURL.URL != nil && t.PublicURL.Scheme != "https":
		v.fail("http.tls.public_url", "%s must be an https URL, like https://10.99.0.1:8443", t.PublicURL)
	case t.PublicURL.URL != nil:
	case t.Listen.Port == 0:
		v.fail("http.tls.public_url", "is required when http.tls.listen has port 0 (the kernel picks it): the URL blades reach the HTTPS listener at")
	case h.PublicURL.URL != nil:
		t.PublicURL.URL = &url.URL{Scheme: "https", Host: net.JoinHostPort(h.PublicURL.Hostname(), strconv.Itoa(int(t.Listen.Port)))}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.fail("http.tls.cert_file", "cert_file and key_file go together (or leave both out for a self-signed certificate kept in <state_dir>/tls)")
	}
}

func isIP(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func (v *validator) validateLimits(f *File) {
	l := &f.HTTP.Limits
	count := func(key string, n, lo, hi int, hiWhat string) {
		if n < lo || n > hi {
			v.fail("http.limits."+key, "%d is out of range (%d to %d%s)", n, lo, hi, hiWhat)
		}
	}
	count("connections", l.Connections, 1, 1<<20, "")
	count("connections_per_client", l.ConnectionsPerClient, 1, max(l.Connections, 1), ", at most http.limits.connections")
	count("event_streams", l.EventStreams, 1, max(l.Connections, 1), ", at most http.limits.connections")
	count("event_streams_per_client", l.EventStreamsPerClient, 1, max(l.EventStreams, 1), ", at most http.limits.event_streams")
	for key, d := range map[string]Duration{"read_timeout": l.ReadTimeout, "write_timeout": l.WriteTimeout, "transfer_stall": l.TransferStall} {
		if d.Duration > 10*time.Minute {
			v.fail("http.limits."+key, "%s is too long (at most 10m; a client holds a connection that long)", d)
		}
	}
}

func (v *validator) validateAPI(f *File) {
	names, hashes := map[string]bool{}, map[string]bool{}
	for i, t := range f.API.Tokens {
		key := fmt.Sprintf("api.tokens[%d]", i)
		if !machineID.MatchString(t.Name) {
			v.fail(key+".name", "%q is not a token name (lower-case letters, digits and dashes, like roller)", t.Name)
		} else if names[t.Name] {
			v.fail(key+".name", "%q names another token too", t.Name)
		}
		names[t.Name] = true
		if !oneOf(t.Scope, "read", "operate", "admin") {
			v.fail(key+".scope", "%q is not a scope (use read, operate or admin)", t.Scope)
		}
		if !fingerprint.MatchString(t.SHA256) {
			v.fail(key+".sha256", "is not a SHA-256 (64 hex digits): put the line `imaged token new` prints here, never the token")
		} else if hashes[strings.ToLower(t.SHA256)] {
			v.fail(key+".sha256", "is the hash of another token too")
		}
		hashes[strings.ToLower(t.SHA256)] = true
	}
	for i, o := range f.API.CORSOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			v.fail(fmt.Sprintf("api.cors_origins[%d]", i), "%q is not an origin like https://dash.example", o)
		}
	}
}

func (v *validator) validateJobs(f *File) {
	j := &f.Jobs
	for phase, d := range j.Timeouts {
		key := "jobs.timeouts." + phase
		if !oneOf(phase, JobPhases...) {
			v.fail(key, "%q is not a phase (use %s)", phase, strings.Join(JobPhases, ", "))
		} else if d.Duration <= 0 {
			v.fail(key, "must be a positive duration, like 10m")
		}
	}
	if j.AgentSilence.Duration < 0 {
		v.fail("jobs.agent_silence", "must not be negative")
	}
	if j.PerChassis < 0 || j.PerChassis > 45 {
		v.fail("jobs.per_chassis", "%d is out of range (0 for the default 8, at most 45)", j.PerChassis)
	}
	if j.LinkMbps < 0 {
		v.fail("jobs.link_mbps", "must not be negative")
	}
	v.validateProbe("jobs.probe", j.Probe)
	for i, m := range f.Machines {
		v.validateProbe(fmt.Sprintf("machines[%d].probe", i), m.Probe)
	}
}

func (v *validator) validateProbe(key string, p *Probe) {
	if p == nil {
		return
	}
	switch p.Kind {
	case "tcp", "http":
		if p.Port < 1 || p.Port > 65535 {
			v.fail(key+".port", "%d is not a port (1-65535)", p.Port)
		}
	case "":
		if !p.CheckIn {
			v.fail(key+".kind", "is required: tcp or http (or check_in: true alone)")
		}
	default:
		v.fail(key+".kind", "%q is not a probe (use tcp or http)", p.Kind)
	}
	if p.Kind != "http" && (p.Path != "" || p.Status != 0) {
		v.fail(key+".path", "path and status are for http probes only")
	}
}

var fingerprint = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (v *validator) validateBMCs(f *File) {
	names := map[string]int{}
	for i, b := range f.BMCs {
		key := fmt.Sprintf("bmcs[%d]", i)
		if !machineID.MatchString(b.Name) {
			v.fail(key+".name", "%q is not a BMC name (lower-case letters, digits and dashes, like ms1)", b.Name)
		} else if j, dup := names[b.Name]; dup {
			v.fail(key+".name", "%q is already the name of bmcs[%d]", b.Name, j)
		}
		names[b.Name] = i
		switch {
		case b.URL.URL == nil:
			v.fail(key+".url", "is required: the Redfish service's address, like https://10.0.0.5")
		case b.URL.Scheme == "http" && !b.Insecure:
			v.fail(key+".url", "%s is plain http: credentials would cross the network in clear; use https (or insecure: true in a lab)", b.URL)
		case b.URL.Scheme != "https" && b.URL.Scheme != "http":
			v.fail(key+".url", "%s: the scheme must be https", b.URL)
		case b.URL.Path != "" && b.URL.Path != "/":
			v.fail(key+".url", "%s: give only scheme and host; imaged finds /redfish/v1 itself", b.URL)
		}
		if b.Fingerprint != "" && !fingerprint.MatchString(strings.ReplaceAll(b.Fingerprint, ":", "")) {
			v.fail(key+".fingerprint", "is not a SHA-256 (64 hex digits, colons allowed)")
		}
		if b.Fingerprint != "" && b.CAFile != "" {
			v.fail(key+".fingerprint", "a pinned fingerprint replaces ca_file: set one of them")
		}
		if b.Insecure && (b.CAFile != "" || b.Fingerprint != "") {
			v.fail(key+".insecure", "contradicts ca_file/fingerprint: choose verification or none")
		}
		if b.Timeout.Duration < 0 || b.Timeout.Duration > 10*time.Minute {
			v.fail(key+".timeout", "%s is out of range (0 for the default 10s, at most 10m)", b.Timeout)
		}
		if b.MaxConcurrent < 0 || b.MaxConcurrent > 64 {
			v.fail(key+".max_concurrent", "%d is out of range (0 for the default, at most 64)", b.MaxConcurrent)
		}
	}
	for i, m := range f.Machines {
		if m.BMC == "" {
			if m.BMCSystem != "" {
				v.fail(fmt.Sprintf("machines[%d].bmc_system", i), "needs machines[%d].bmc: which BMC the system is behind", i)
			}
			continue
		}
		if _, ok := names[m.BMC]; !ok {
			known := make([]string, 0, len(f.BMCs))
			for _, b := range f.BMCs {
				known = append(known, b.Name)
			}
			if len(known) == 0 {
				v.fail(fmt.Sprintf("machines[%d].bmc", i), "%q names a BMC, but no bmcs are configured: add it under bmcs", m.BMC)
			} else {
				v.fail(fmt.Sprintf("machines[%d].bmc", i), "%q is not one of bmcs[].name (%s)", m.BMC, strings.Join(known, ", "))
			}
		}
	}
}

func (v *validator) validateSubnet(f *File) {
	d := &f.DHCP
	if !d.Subnet.IsValid() || !d.Subnet.Addr().Is4() {
		v.fail("dhcp.subnet", "is required in server mode: the IPv4 network the blades are on, like 10.99.0.0/24")
		return
	}
	in := func(key string, a Addr) {
		if a.IsValid() && !d.Subnet.Contains(a.Addr) {
			v.fail(key, "%s is outside dhcp.subnet %s", a, d.Subnet)
		}
	}
	in("dhcp.server_ip", d.ServerIP)
	in("dhcp.router", d.Router)
	if d.Pool != nil {
		if !d.Pool.Start.IsValid() || !d.Pool.End.IsValid() {
			v.fail("dhcp.pool", "needs both start and end")
		} else {
			in("dhcp.pool.start", d.Pool.Start)
			in("dhcp.pool.end", d.Pool.End)
			if d.Pool.End.Less(d.Pool.Start.Addr) {
				v.fail("dhcp.pool.end", "%s comes before start %s", d.Pool.End, d.Pool.Start)
			}
		}
	}
	if d.LeaseTime.Duration < 60e9 {
		v.fail("dhcp.lease_time", "%s is too short (at least 1m)", d.LeaseTime)
	}
	if d.UnknownClients != "ignore" && d.Pool == nil {
		v.fail("dhcp.unknown_clients", "%q needs dhcp.pool to give unknown clients an address", d.UnknownClients)
	}
}

func (v *validator) validateBoot(f *File) {
	b := &f.Boot
	profiles := map[string]bool{ProfileAgent: true, ProfileLocal: true}
	for name, text := range b.Profiles {
		key := "boot.profiles." + name
		if profiles[name] {
			v.fail(key, "%q is built in; give the custom profile another name", name)
			continue
		}
		profiles[name] = true
		if _, err := template.New(name).Parse(text); err != nil {
			v.fail(key, "the iPXE template does not parse: %v", err)
		}
	}
	if !profiles[b.DefaultProfile] {
		v.fail("boot.default_profile", "%q is not a profile (use agent, local or a name under boot.profiles)", b.DefaultProfile)
	}
	for i, m := range f.Machines {
		if !profiles[m.Boot] {
			v.fail(fmt.Sprintf("machines[%d].boot", i), "%q is not a profile (use agent, local or a name under boot.profiles)", m.Boot)
		}
	}
}

func (v *validator) validateMachines(f *File) {
	ids := map[string]int{}
	macs := map[string]string{}
	ips := map[string]string{}
	positions := map[string]int{}
	for i, m := range f.Machines {
		key := fmt.Sprintf("machines[%d]", i)
		if !machineID.MatchString(m.ID) {
			v.fail(key+".id", "%q is not a machine id (lower-case letters, digits and dashes, like ms1-c10n1)", m.ID)
		} else if j, dup := ids[m.ID]; dup {
			v.fail(key+".id", "%q is already the id of machines[%d]", m.ID, j)
		}
		ids[m.ID] = i
		if len(m.MACs) == 0 {
			v.fail(key+".macs", "machine %q needs at least one MAC address", m.ID)
		}
		for j, mac := range m.MACs {
			s := mac.String()
			if other, dup := macs[s]; dup {
				v.fail(fmt.Sprintf("%s.macs[%d]", key, j), "%s already belongs to machine %q", s, other)
			}
			macs[s] = m.ID
		}
		if m.IP.IsValid() {
			if f.DHCP.Mode == ModeServer && f.DHCP.Subnet.IsValid() && !f.DHCP.Subnet.Contains(m.IP.Addr) {
				v.fail(key+".ip", "%s is outside dhcp.subnet %s", m.IP, f.DHCP.Subnet)
			}
			if m.IP.Addr == f.ServerAddr() {
				v.fail(key+".ip", "%s is this server's own address", m.IP)
			}
			if p := f.DHCP.Pool; p != nil && p.Start.IsValid() && p.End.IsValid() && !m.IP.Less(p.Start.Addr) && !p.End.Less(m.IP.Addr) {
				v.fail(key+".ip", "%s is inside dhcp.pool; reservations must be outside the dynamic range", m.IP)
			}
			if other, dup := ips[m.IP.String()]; dup {
				v.fail(key+".ip", "%s is already reserved for machine %q", m.IP, other)
			}
			ips[m.IP.String()] = m.ID
		}
		if m.Slot < 0 {
			v.fail(key+".slot", "%d is negative", m.Slot)
		}
		v.validatePosition(f, i, positions)
		if m.Disk.Serial != "" && m.Disk.ByPath != "" {
			v.fail(key+".disk", "give serial or by_path, not both")
		}
		if strings.ContainsAny(m.Disk.ByPath, "/ ") {
			v.fail(key+".disk.by_path", "%q is a name in /dev/disk/by-path, like pci-0000:00:1f.2-ata-1 (no slashes)", m.Disk.ByPath)
		}
	}
}

// maxNode is the most nodes a cartridge holds: a Moonshot m700 cartridge has four servers, an
// m710x one.
const maxNode = 4

// validatePosition checks where machine i sits in its chassis (its cartridge bay and the node in
// the cartridge, which the dashboard's chassis map draws) and fills in node 1 for a machine with
// a bay and no node: a cartridge of one server. Two machines in one place is an error.
func (v *validator) validatePosition(f *File, i int, positions map[string]int) {
	m := &f.Machines[i]
	key := fmt.Sprintf("machines[%d]", i)
	switch {
	case m.Node < 0 || m.Node > maxNode:
		v.fail(key+".node", "%d is out of range: a cartridge holds nodes 1 to %d (an m700 has 4, an m710x 1)", m.Node, maxNode)
		return
	case m.Node > 0 && m.Slot == 0:
		v.fail(key+".node", "node %d needs machines[%d].slot, the cartridge bay the node is in", m.Node, i)
		return
	case m.Slot == 0:
		return
	case m.Node == 0:
		m.Node = 1
	}
	pos := fmt.Sprintf("%s bay %d node %d", m.Chassis, m.Slot, m.Node)
	if m.Chassis == "" {
		pos = fmt.Sprintf("bay %d node %d (no chassis)", m.Slot, m.Node)
	}
	if j, dup := positions[pos]; dup {
		v.fail(key+".node", "%s is already machines[%d] (%s): give each machine its own slot and node", pos, j, f.Machines[j].ID)
		return
	}
	positions[pos] = i
}

// An AWS region name, like us-east-1, eu-central-2 or us-gov-west-1.
var awsRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// IsAWSRegion reports whether s is shaped like an AWS region name (us-east-1, us-gov-west-1), as
// ec2.region and ec2.copy_to must be; command-line flags are checked the same way.
func IsAWSRegion(s string) bool { return awsRegion.MatchString(s) }

func (v *validator) validateEC2(f *File) {
	e := &f.EC2
	if e.Region != "" && !awsRegion.MatchString(e.Region) {
		v.fail("ec2.region", "%q is not an AWS region (like us-east-1)", e.Region)
	}
	seen := map[string]bool{e.Region: true}
	for i, r := range e.CopyTo {
		key := fmt.Sprintf("ec2.copy_to[%d]", i)
		switch {
		case !awsRegion.MatchString(r):
			v.fail(key, "%q is not an AWS region (like eu-west-1)", r)
		case seen[r]:
			v.fail(key, "%q is listed twice or is ec2.region itself", r)
		}
		seen[r] = true
	}
	if e.Endpoint != "" {
		if u, err := url.Parse(e.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail("ec2.endpoint", "%q is not an absolute http(s) URL", e.Endpoint)
		}
	}
	if e.Workers < 1 || e.Workers > 1024 {
		v.fail("ec2.workers", "%d is out of range (1-1024)", e.Workers)
	}
	if e.Contract != "" {
		if b, k, ok := strings.Cut(strings.TrimPrefix(e.Contract, "s3://"), "/"); !strings.HasPrefix(e.Contract, "s3://") || !ok || b == "" || k == "" {
			v.fail("ec2.contract", "%q is not an S3 object URL like s3://my-bucket/amis.json", e.Contract)
		}
	}
	if e.Keep < 1 {
		v.fail("ec2.keep", "must be at least 1")
	}
	s := &e.Smoke
	if s.Subnet != "" && !strings.HasPrefix(s.Subnet, "subnet-") {
		v.fail("ec2.smoke.subnet", "%q is not a subnet id (subnet-…)", s.Subnet)
	}
	for i, g := range s.SecurityGroups {
		if !strings.HasPrefix(g, "sg-") {
			v.fail(fmt.Sprintf("ec2.smoke.security_groups[%d]", i), "%q is not a security group id (sg-…)", g)
		}
	}
	if p := s.Probe; p != "" && !strings.HasPrefix(p, "tcp:") && !strings.HasPrefix(p, "http://") {
		v.fail("ec2.smoke.probe", "%q is not a probe (write tcp:22 or http://:8080/healthz)", p)
	}
}
