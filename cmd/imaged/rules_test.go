package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/config"
)

const (
	rulesFile     = "../../systemd/imaged.rules.yml"
	rulesTestFile = "../../systemd/imaged.rules.test.yml"
)

// TestAlertRules checks the shipped alerting rules with Debian's promtool: they must load, and
// their unit tests (series that fire each alert and series that must not) must pass.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Geteuid() == 0 {
			t.Fatal("promtool not found: CI runs as root and must have it (apt-get install prometheus; scripts/install-deps.sh does)")
		}
		t.Skip("skipping: promtool not found (apt-get install prometheus, which provides /usr/bin/promtool)")
	}
	for _, args := range [][]string{{"check", "rules", filepath.Base(rulesFile)}, {"test", "rules", filepath.Base(rulesTestFile)}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(rulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesNameRealMetrics guards the rules against drift: every metric they name (in an
// expression or a description) must be one a freshly started daemon exports, so that a renamed
// metric cannot leave an alert silently watching nothing. The daemon is built as `serve` builds
// it, with every component that has metrics: TFTP, a BMC, the jobs, and the DHCP server in
// server mode with a pool (bound on loopback only).
func TestAlertRulesNameRealMetrics(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, n := range regexp.MustCompile(`\bimaged_[a-z0-9_]+`).FindAllString(line, -1) {
			if !slices.Contains(used, n) {
				used = append(used, n)
			}
		}
	}
	if len(used) < 10 {
		t.Fatalf("found only %d metric names in %s: %v", len(used), rulesFile, used)
	}

	exported := daemonMetricNames(t)
	for _, n := range used {
		if !exported[n] {
			t.Errorf("the alert rules use %s, which imaged does not export", n)
		}
	}
}

// daemonMetricNames builds a daemon from a config with every component that has metrics and
// returns the names a scrape of it shows (histograms with their _bucket, _sum and _count).
func daemonMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755)
	for _, f := range []string{"undionly.kpxe", "ipxe.efi"} {
		os.WriteFile(filepath.Join(dir, "ipxe", f), []byte(f), 0o644)
	}
	creds := filepath.Join(dir, "bmc.cred")
	os.WriteFile(creds, []byte("username: admin\npassword: secret\n"), 0o600)
	// The BMC is never called: its client and metrics exist from the start.
	p := writeConfig(t, fmt.Sprintf(`version: 1
state_dir: %s/state
http: {listen: "127.0.0.1:0", public_url: "http://127.0.0.1:1"}
dhcp:
  mode: server
  interface: lo
  server_ip: 127.0.0.1
  subnet: 127.0.0.0/24
  pool: {start: 127.0.0.100, end: 127.0.0.120}
  router_advertisements: {enabled: false}
tftp: {listen: "127.0.0.1:0"}
boot: {ipxe_dir: %s/ipxe}
bmcs:
  - {name: ms1, url: "https://127.0.0.1:1", credentials: %q, insecure: true}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"], bmc: ms1}
`, dir, dir, creds))
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	// serve would bind DHCP on port 67 of the interface; here the same server binds a free port
	// on loopback, and never sends a packet.
	dc := dhcpConfig(cfg)
	dc.ListenAddr = "127.0.0.1:0"
	cfg.DHCP.Mode = config.ModeOff
	d, err := newDaemon(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if _, err := d.newDHCP(dc, &observer{inv: d.inv, jobs: d.jobs, log: d.log}); err != nil {
		t.Fatal(err)
	}
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		switch mf.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM", "SUMMARY":
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+s] = true
			}
		}
	}
	for _, want := range []string{"imaged_dhcp_pool_addresses", "imaged_bmc_degraded", "imaged_tftp_transfers_total", "imaged_jobs_past_deadline"} {
		if !names[want] {
			t.Fatalf("the daemon built for the guard lacks %s: it is not built as serve builds it", want)
		}
	}
	return names
}
