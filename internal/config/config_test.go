package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestExampleParses(t *testing.T) {
	f, err := Parse("example.yaml", Example)
	if err != nil {
		t.Fatalf("the README example must parse: %v", err)
	}
	if got := f.DHCP.ServerIP.String(); got != "10.99.0.1" {
		t.Errorf("server_ip = %s", got)
	}
	if got := f.Machines[0].MACs[0].String(); got != "52:54:00:99:00:11" {
		t.Errorf("mac = %s", got)
	}
	if got := f.HTTP.PublicURL.String(); got != "http://10.99.0.1:8080" {
		t.Errorf("public_url = %s", got)
	}
	if b := f.BMCs[0]; b.Name != "ms1" || b.URL.Host != "10.99.0.1:8443" || f.Machines[0].BMC != "ms1" || f.Machines[0].BMCSystem != "ms1-c1n1" {
		t.Errorf("bmcs: %+v, machine %+v", f.BMCs, f.Machines[0])
	}
	if l := f.HTTP.Limits; l.ConnectionsPerClient != 32 || l.EventStreams != 64 || l.TransferStall.Seconds() != 30 {
		t.Errorf("http.limits with defaults: %+v", l)
	}
	if !f.RAEnabled() || f.DHCP.LeaseTime.Hours() != 1 || f.Boot.Agent.Cmdline != "console=ttyS0" {
		t.Errorf("unexpected values: %+v", f.DHCP)
	}
}

// replace swaps one line of the example for another, to make a single mistake.
func replace(t *testing.T, old, new string) []byte {
	t.Helper()
	s := string(Example)
	if !strings.Contains(s, old) {
		t.Fatalf("example lacks %q", old)
	}
	return []byte(strings.Replace(s, old, new, 1))
}

func lineOf(t *testing.T, data []byte, needle string) int {
	t.Helper()
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, needle) {
			return i + 1
		}
	}
	t.Fatalf("no line has %q", needle)
	return 0
}

func TestErrorsNameLineAndFix(t *testing.T) {
	cases := []struct {
		name, old, new string
		at             string // text on the line the error must name
		want           []string
	}{
		{"unknown key with a typo", "  lease_time: 1h", "  lease_tme: 1h", "lease_tme", []string{`unknown key "lease_tme"`, `did you mean "lease_time"`, "dhcp.lease_tme"}},
		{"unknown key far from any", "  lease_time: 1h", "  colour: blue", "colour", []string{`unknown key "colour"`, "known keys here"}},
		{"unregistered grace too short", "  unregistered_grace: 1h", "  unregistered_grace: 10s", "unregistered_grace", []string{"images.unregistered_grace", "too short", "1m or more"}},
		{"bad address", "  server_ip: 10.99.0.1", "  server_ip: 10.99.0.300", "10.99.0.300", []string{`"10.99.0.300" is not an IP address`}},
		{"bad prefix", "  subnet: 10.99.0.0/24", "  subnet: 10.99.0.0/33", "/33", []string{"CIDR"}},
		{"host bits", "  subnet: 10.99.0.0/24", "  subnet: 10.99.0.1/24", "10.99.0.1/24", []string{"host bits"}},
		{"bad mac", "    macs: [52:54:00:99:00:11]", "    macs: [52:54:00:99:00]", "macs:", []string{"not an Ethernet MAC"}},
		{"bad duration", "  lease_time: 1h", "  lease_time: an hour", "lease_time", []string{"not a duration"}},
		{"bad mode", "  mode: server ", "  mode: serve ", "mode: serve", []string{`"serve" is not a mode`}},
		{"pool outside subnet", "{start: 10.99.0.100,", "{start: 10.98.0.100,", "pool:", []string{"outside dhcp.subnet"}},
		{"reservation inside pool", "    ip: 10.99.0.11", "    ip: 10.99.0.150", "ip: 10.99.0.150", []string{"inside dhcp.pool"}},
		{"unknown profile", "    boot: agent", "    boot: agnet", "boot: agnet", []string{`"agnet" is not a profile`}},
		{"wrong kind", "  lease_time: 1h", "  lease_time: [1h]", "lease_time", []string{"single value"}},
		{"number as text", "    slot: 1", "    slot: one", "slot: one", []string{"cannot unmarshal"}},
		{"node out of range", "    slot: 1", "    slot: 1\n    node: 5", "node: 5", []string{"machines[0].node", "nodes 1 to 4"}},
		{"node without a slot", "    slot: 1", "    node: 2", "node: 2", []string{"machines[0].node", "needs machines[0].slot"}},
		{"version", "version: 1", "version: 2", "version: 2", []string{"this imaged reads version 1"}},
		{"bad machine id", "  - id: ms1-c1n1", "  - id: MS1_C1", "MS1_C1", []string{"not a machine id"}},
		{"unknown bmc", "    bmc: ms1", "    bmc: ms2", "bmc: ms2", []string{`"ms2" is not one of bmcs[].name (ms1)`}},
		{"bmc over http", "    url: https://10.99.0.1:8443", "    url: http://10.99.0.1:8443", "url: http://10.99.0.1:8443", []string{"plain http", "use https"}},
		{"bmc url with a path", "    url: https://10.99.0.1:8443", "    url: https://10.99.0.1:8443/redfish/v1", "8443/redfish", []string{"only scheme and host"}},
		{"bad fingerprint", "    ca_file: /etc/imaged/bmc/ms1-ca.pem", "    fingerprint: abc", "fingerprint: abc", []string{"not a SHA-256"}},
		{"insecure with a CA", "    timeout: 10s", "    timeout: 10s\n    insecure: true", "insecure: true", []string{"contradicts ca_file"}},
		{"bmc timeout", "    timeout: 10s", "    timeout: 1h", "timeout: 1h", []string{"out of range"}},
		{"token stored in clear", "    - {name: roller, scope: operate, sha256: ", "    - {name: roller, scope: operate, sha256: 0123}\n    - {name: x, scope: operate, sha256: ", "sha256: 0123", []string{"never the token"}},
		{"bad scope", "    - {name: roller, scope: operate,", "    - {name: roller, scope: write,", "scope: write", []string{`"write" is not a scope`}},
		{"unknown job phase", "  timeouts: {netbooting: 15m}", "  timeouts: {netboot: 15m}", "netboot:", []string{`"netboot" is not a phase`}},
		{"bad region", "  region: us-east-1", "  region: us-east", "region: us-east", []string{`"us-east" is not an AWS region`}},
		{"copy into the source region", "  copy_to: [eu-west-1]", "  copy_to: [us-east-1]", "copy_to", []string{"ec2.copy_to[0]", "ec2.region itself"}},
		{"contract not in S3", "  contract: s3://release-amis/amis.json", "  contract: https://release-amis/amis.json", "contract:", []string{"s3://my-bucket/amis.json"}},
		{"tftp slots", "  listen: 10.99.0.1:69", "  listen: 10.99.0.1:69\n  max_transfers: -1", "max_transfers", []string{"tftp.max_transfers", "out of range"}},
		{"tftp per-client cap above the slots", "  listen: 10.99.0.1:69", "  listen: 10.99.0.1:69\n  max_transfers: 16\n  max_per_client: 32", "max_per_client", []string{"tftp.max_per_client", "above tftp.max_transfers 16"}},
		{"tftp timeout cap above RFC 2349's", "  listen: 10.99.0.1:69", "  listen: 10.99.0.1:69\n  max_timeout: 10m", "max_timeout", []string{"tftp.max_timeout", "1s to 255s"}},
		{"per-client connections over the total", "connections_per_client: 32,", "connections_per_client: 2000,", "connections_per_client: 2000", []string{"http.limits.connections_per_client", "2000 is out of range (1 to 1024, at most http.limits.connections)"}},
		{"read timeout too long", "read_timeout: 10s}", "read_timeout: 1h}", "read_timeout: 1h", []string{"http.limits.read_timeout", "too long"}},
		{"negative limit", "{connections: 1024,", "{connections: -1,", "connections: -1", []string{"http.limits.connections:", "out of range"}},
		{"https as the plain URL", "  public_url: http://10.99.0.1:8080 ", "  public_url: https://10.99.0.1:8080 ", "public_url: https://10.99.0.1:8080", []string{"http.public_url", "the HTTPS one is http.tls.public_url"}},
		{"one port for both listeners", "    listen: 10.99.0.1:8443", "    listen: 10.99.0.1:8080", "    listen: 10.99.0.1:8080", []string{"http.tls.listen", "is http.listen too"}},
		{"tls URL not https", "    public_url: https://10.99.0.1:8443", "    public_url: http://10.99.0.1:8443", "public_url: http://10.99.0.1:8443", []string{"http.tls.public_url", "must be an https URL"}},
		{"cert without key", "    key_file: /etc/imaged/tls/key.pem\n", "", "cert_file:", []string{"http.tls.cert_file", "go together"}},
		{"ipxe_https without tls", "    listen: 10.99.0.1:8443", "    enabled: false\n    ipxe_https: true", "ipxe_https: true", []string{"http.tls.ipxe_https", "needs the HTTPS listener"}},
		{"probe without a port", "  probe: {kind: tcp, port: 22}", "  probe: {kind: tcp}", "probe:", []string{"is not a port"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := replace(t, c.old, c.new)
			_, err := Parse("imaged.yaml", data)
			if err == nil {
				t.Fatal("Parse accepted a broken file")
			}
			want := append([]string{"imaged.yaml:" + strconv.Itoa(lineOf(t, data, c.at)) + ":"}, c.want...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestTFTPLimits(t *testing.T) {
	f, err := Parse("imaged.yaml", replace(t, "  listen: 10.99.0.1:69", "  listen: 10.99.0.1:69\n  max_transfers: 128\n  max_per_client: 2\n  max_timeout: 3s"))
	if err != nil {
		t.Fatal(err)
	}
	if tf := f.TFTP; tf.MaxTransfers != 128 || tf.MaxPerClient != 2 || tf.MaxTimeout.Duration != 3*time.Second {
		t.Errorf("tftp = %+v", tf)
	}
	// Unset, they stay zero: the TFTP server applies its own defaults.
	f, err = Parse("imaged.yaml", Example)
	if err != nil {
		t.Fatal(err)
	}
	if tf := f.TFTP; tf.MaxTransfers != 0 || tf.MaxPerClient != 0 || tf.MaxTimeout.Duration != 0 {
		t.Errorf("tftp defaults = %+v", tf)
	}
}

// The listeners default to the provisioning address, never to every interface.
func TestListenDefaults(t *testing.T) {
	for _, c := range []struct{ yaml, listen, tlsListen, tlsURL string }{
		{"dhcp: {mode: proxy, interface: eth1, server_ip: 10.99.0.1}\nhttp: {public_url: http://imaged.lab:8080}", "10.99.0.1:8080", "10.99.0.1:8443", "https://imaged.lab:8443"},
		{"http: {public_url: http://127.0.0.1:8080}", "127.0.0.1:8080", "127.0.0.1:8443", "https://127.0.0.1:8443"},
		{"http: {listen: ':8080', public_url: http://127.0.0.1:8080, tls: {listen: ':9443'}}", ":8080", ":9443", "https://127.0.0.1:9443"},
	} {
		f, err := Parse("l.yaml", []byte("version: 1\n"+c.yaml+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		if f.HTTP.Listen.String() != c.listen || f.HTTP.TLS.Listen.String() != c.tlsListen || f.HTTP.TLS.PublicURL.String() != c.tlsURL || !f.TLSEnabled() {
			t.Errorf("%s: listen %s, tls %s %s; want %s, %s %s", c.yaml, f.HTTP.Listen, f.HTTP.TLS.Listen, f.HTTP.TLS.PublicURL, c.listen, c.tlsListen, c.tlsURL)
		}
	}
	data := []byte("version: 1\nhttp:\n  public_url: http://imaged.lab:8080\n")
	if _, err := Parse("n.yaml", data); err == nil || !strings.Contains(err.Error(), "n.yaml:2: http.listen: is required") {
		t.Errorf("a host name and no server_ip: %v", err)
	}
}

func TestDuplicatesReportedTogether(t *testing.T) {
	data := []byte(string(Example) + `  - id: ms1-c1n2
    macs: [52:54:00:99:00:11]
    ip: 10.99.0.11
`)
	_, err := Parse("x.yaml", data)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want 2 errors (duplicate MAC and IP), got %v", err)
	}
	if !strings.Contains(errs[0].Error(), `already belongs to machine "ms1-c1n1"`) || !strings.Contains(errs[1].Error(), "already reserved") {
		t.Errorf("got %v", errs)
	}
}

func TestEmptyAndMinimal(t *testing.T) {
	if _, err := Parse("e.yaml", nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	f, err := Parse("m.yaml", []byte("version: 1\nhttp: {public_url: http://127.0.0.1:8080}\n"))
	if err != nil {
		t.Fatalf("minimal file: %v", err)
	}
	if f.DHCP.Mode != ModeOff || f.Boot.DefaultProfile != ProfileLocal || f.RAEnabled() {
		t.Errorf("defaults: %+v", f)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Example)
	f.Add([]byte("version: 1\nmachines: [{id: a, macs: [x]}]"))
	f.Add([]byte("version: 1\ndhcp: {pool: {start: 1.2.3.4}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

// Two machines in one bay and node are refused at the second one's line; a bay without a node is
// node 1, a cartridge of one server.
func TestMachinePosition(t *testing.T) {
	second := "  - id: ms1-c1n2\n    macs: [52:54:00:99:00:12]\n    chassis: ms1\n    slot: 1\n    node: 1\n"
	data := append(replace(t, "    boot: agent\n", "    boot: agent\n"), second...)
	_, err := Parse("imaged.yaml", data)
	if err == nil || !strings.Contains(err.Error(), "imaged.yaml:"+strconv.Itoa(lineOf(t, data, "node: 1"))+": machines[1].node: ms1 bay 1 node 1 is already machines[0] (ms1-c1n1)") {
		t.Fatalf("two machines in bay 1 node 1: %v", err)
	}
	f, err := Parse("imaged.yaml", append(replace(t, "    boot: agent\n", "    boot: agent\n"), strings.Replace(second, "node: 1", "node: 4", 1)...))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machines[0].Node != 1 || f.Machines[1].Node != 4 {
		t.Errorf("nodes %d and %d, want 1 (the default with a slot) and 4", f.Machines[0].Node, f.Machines[1].Node)
	}
}
