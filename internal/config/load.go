package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads, strictly decodes and validates the config file at path. Every error names the
// file and line; several problems are reported together as Errors.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for bytes already read; name is used in error messages.
func Parse(name string, data []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlErr(name, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{File: name, Msg: "the file is empty (it needs at least `version: 1`)"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Msg: "the top level must be a mapping of keys such as version, dhcp, machines"}
	}
	lines := map[string]int{}
	var errs Errors
	checkKeys(root, reflect.TypeOf(File{}), "", lines, func(line int, key, msg string) {
		errs = append(errs, &Error{File: name, Line: line, Key: key, Msg: msg})
	})
	if len(errs) > 0 {
		return nil, errs
	}
	var f File
	if err := root.Decode(&f); err != nil {
		return nil, yamlErr(name, err)
	}
	if f.Version != CurrentVersion {
		return nil, &Error{File: name, Line: lines["version"], Key: "version",
			Msg: fmt.Sprintf("is %d, this imaged reads version %d (set `version: %d`)", f.Version, CurrentVersion, CurrentVersion)}
	}
	f.applyDefaults()
	v := validator{file: name, lines: lines}
	v.validate(&f)
	if len(v.errs) > 0 {
		sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Line < v.errs[j].Line })
		return nil, v.errs
	}
	return &f, nil
}

// checkKeys walks the document beside the Go type it decodes into, reports keys that the type
// does not have (with the nearest known key) and records the line of every key path.
func checkKeys(n *yaml.Node, t reflect.Type, path string, lines map[string]int, report func(int, string, string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && !isScalarType(t):
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return
			}
			report(n.Line, path, "must be a mapping of keys, not a single value or a list")
			return
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = t.Field(i).Type
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", k.Value)
				if s := nearest(k.Value, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else {
					msg += fmt.Sprintf(" (known keys here: %s)", strings.Join(names, ", "))
				}
				report(k.Line, p, msg)
				continue
			}
			if seen[k.Value] {
				report(k.Line, p, "is set twice; keep one")
			}
			seen[k.Value] = true
			lines[p] = k.Line
			checkKeys(v, ft, p, lines, report)
		}
	case t.Kind() == reflect.Slice && !isScalarType(t):
		if n.Kind != yaml.SequenceNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return
			}
			report(n.Line, path, "must be a list")
			return
		}
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			checkKeys(c, t.Elem(), p, lines, report)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			report(n.Line, path, "must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			lines[join(path, n.Content[i].Value)] = n.Content[i].Line
		}
	default:
		if n.Kind != yaml.ScalarNode {
			report(n.Line, path, "must be a single value, not a mapping or a list")
		}
	}
}

func isScalarType(t reflect.Type) bool {
	switch t {
	case reflect.TypeOf(Addr{}), reflect.TypeOf(Prefix{}), reflect.TypeOf(MAC{}),
		reflect.TypeOf(Duration{}), reflect.TypeOf(URL{}), reflect.TypeOf(AddrPort{}):
		return true
	}
	return false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// nearest returns the known key closest to k by edit distance, if it is close enough to be a typo.
func nearest(k string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(k, n); d < bestD || (d == bestD && best == "") && d <= 2 {
			best, bestD = n, d
		}
	}
	if bestD > 2 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlErr turns the YAML library's errors into Errors that name the file.
func yamlErr(name string, err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = name
		return ce
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var errs Errors
		for _, m := range te.Errors {
			errs = append(errs, lineMsg(name, m))
		}
		return errs
	}
	return lineMsg(name, err.Error())
}

func lineMsg(name, m string) *Error {
	if g := yamlLine.FindStringSubmatch(strings.TrimSpace(m)); g != nil {
		line, _ := strconv.Atoi(g[1])
		msg := strings.ReplaceAll(g[2], "!!str", "text")
		msg = strings.ReplaceAll(msg, "!!int", "number")
		msg = strings.ReplaceAll(msg, "!!map", "mapping")
		msg = strings.ReplaceAll(msg, "!!seq", "list")
		return &Error{File: name, Line: line, Msg: msg}
	}
	return &Error{File: name, Msg: strings.TrimPrefix(m, "yaml: ")}
}

// Example is a complete, valid config for the lab network, also shown in the README.
var Example = bytes.TrimLeft([]byte(`
version: 1
state_dir: /var/lib/imaged
log:
  level: info            # debug, info, warn, error
  format: text           # text or json
http:
  listen: 10.99.0.1:8080
  public_url: http://10.99.0.1:8080   # boot scripts and assets for firmware, metadata, check-in
  tls:                   # the API, the agent's API and images: HTTPS only
    listen: 10.99.0.1:8443
    public_url: https://10.99.0.1:8443
    cert_file: /etc/imaged/tls/cert.pem   # leave both out: a self-signed one kept in <state_dir>/tls
    key_file: /etc/imaged/tls/key.pem
  control_socket: /var/lib/imaged/control.sock   # the CLI's way in while imaged runs (root only)
  limits: {connections: 1024, connections_per_client: 32, read_timeout: 10s}   # what clients may hold
api:
  tokens:                # bearer tokens for the operator API (imaged token new NAME -scope S)
    - {name: roller, scope: operate, sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}
  anonymous_read: false
  cors_origins: [https://dash.example]
dhcp:
  mode: server           # server, proxy or off
  interface: veth-srv
  server_ip: 10.99.0.1
  subnet: 10.99.0.0/24
  pool: {start: 10.99.0.100, end: 10.99.0.200}
  lease_time: 1h
  unknown_clients: ignore   # ignore, lease or netboot
  router_advertisements: {enabled: true, prefix: fd99::/64}
tftp:
  listen: 10.99.0.1:69
boot:
  assets_dir: /var/lib/imaged/boot
  ipxe_dir: /usr/lib/ipxe
  uefi_file: ipxe.efi     # or snponly.efi
  agent: {kernel: vmlinuz, initrd: initrd.img, cmdline: console=ttyS0}
  default_profile: local
bmcs:
  - name: ms1               # the chassis manager in front of the cartridges
    url: https://10.99.0.1:8443
    credentials: /etc/imaged/bmc/ms1   # "username: …" and "password: …" lines, mode 0600
    ca_file: /etc/imaged/bmc/ms1-ca.pem
    timeout: 10s
jobs:
  timeouts: {netbooting: 15m}   # phases: queued, fencing, boot-set, powering-on, netbooting, writing, …
  per_chassis: 8
  link_mbps: 10000
  probe: {kind: tcp, port: 22}  # readiness after the reboot; default: the OS checks in
  reimage_stale: true           # an OS that checks in with another image is reimaged
images:
  unregistered_grace: 1h        # blobs no catalog image references are removed this long after their import
ec2:                            # imaged ami: credentials from the AWS SDK's default chain
  region: us-east-1
  copy_to: [eu-west-1]
  contract: s3://release-amis/amis.json   # the published amis.json
  keep: 10
  smoke: {subnet: subnet-0abc, security_groups: [sg-0abc], instance_type: t3.micro, probe: "tcp:22"}
machines:
  - id: ms1-c1n1
    macs: [52:54:00:99:00:11]
    ip: 10.99.0.11
    chassis: ms1
    slot: 1
    worker_group: linux-build
    worker_type: b-linux-large
    bmc: ms1
    bmc_system: ms1-c1n1    # its Redfish System Id; default: the system with one of macs
    disk: {serial: S3Z8NX0K123456}   # or by_path: pci-…; default the only non-removable disk
    boot: agent
`), "\n")
