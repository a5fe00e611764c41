package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnit checks the shipped unit with systemd's own tools: it must verify cleanly, be
// Type=notify (serve sends READY=1), and its hardening must rate as low exposure.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not found: CI must have systemd installed")
		}
		t.Skip("skipping: systemd-analyze not found (apt-get install systemd)")
	}
	unit, err := os.ReadFile("../../systemd/imaged.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "User=imaged", "StateDirectory=imaged", "ProtectSystem=strict",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "ExecStartPre=/usr/local/bin/imaged check-config"} {
		if !strings.Contains(string(unit), want+"\n") && !strings.Contains(string(unit), want+" ") {
			t.Errorf("unit lacks %q", want)
		}
	}
	// verify insists that ExecStart exists: point it at an executable that does.
	dir := t.TempDir()
	p := filepath.Join(dir, "imaged.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/imaged", "/bin/true")), 0o644)
	if out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(sa, "security", "--offline=true", p).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for imaged.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 3.0 {
		t.Errorf("exposure level %.1f, want ≤ 3.0 (OK)\n%s", score, out)
	}
}
