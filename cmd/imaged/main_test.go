package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/machines"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(context.Background(), append([]string{"imaged"}, args...), &o, &e)
	return o.String(), e.String(), err
}

func TestCommandLine(t *testing.T) {
	if out, _, err := runCmd(t, "version"); err != nil || !strings.HasPrefix(out, "imaged ") {
		t.Errorf("version: %q %v", out, err)
	}
	_, _, err := runCmd(t, "frobnicate")
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %v", err)
	}
	if _, stderr, err := runCmd(t, "serve", "-h"); err != nil || !strings.Contains(stderr, "-config") {
		t.Errorf("serve -h: %v %q", err, stderr)
	}
	_, _, err = runCmd(t, "machines", "lst")
	if err == nil || exitCode(err) != 2 {
		t.Errorf("unknown subcommand: %v", err)
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imaged.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadConfigStopsBeforeStarting(t *testing.T) {
	// The HTTP port is taken by nobody: if serve started anything it would bind it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := writeConfig(t, fmt.Sprintf("version: 1\nhttp: {listen: %q, public_url: http://127.0.0.1:1}\ndhcp:\n  mode: server\n  interface: lo\n  server_ip: 10.0.0.1\n  subnet: 10.0.0.0/24\n  lease_tim: 1h\n", addr))
	for _, cmd := range []string{"check-config", "serve"} {
		_, _, err := runCmd(t, cmd, "-config", p)
		if err == nil || exitCode(err) != 1 {
			t.Fatalf("%s accepted a bad config: %v", cmd, err)
		}
		if want := p + `:8: dhcp.lease_tim: unknown key "lease_tim" (did you mean "lease_time"?)`; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", cmd, err, want)
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("serve bound its HTTP port despite the bad config")
	}
	good := writeConfig(t, string(config.Example))
	if out, _, err := runCmd(t, "check-config", "-config", good); err != nil || !strings.Contains(out, "ok (dhcp server, 1 machines") {
		t.Errorf("check-config of the example: %q %v", out, err)
	}
}

// startDaemon runs a daemon in-process with DHCP off and every socket on 127.0.0.1:0.
func startDaemon(t *testing.T) (base string, d *daemon, cancel func()) {
	t.Helper()
	dir := t.TempDir()
	ipxe := filepath.Join(dir, "ipxe")
	os.MkdirAll(filepath.Join(dir, "elsewhere"), 0o755)
	os.MkdirAll(ipxe, 0o755)
	os.WriteFile(filepath.Join(ipxe, "undionly.kpxe"), []byte("undionly"), 0o644)
	// Debian's ipxe.efi is a symlink out of /usr/lib/ipxe; the copy must follow it.
	os.WriteFile(filepath.Join(dir, "elsewhere", "ipxe.efi"), []byte("ipxe-efi"), 0o644)
	os.Symlink(filepath.Join(dir, "elsewhere", "ipxe.efi"), filepath.Join(ipxe, "ipxe.efi"))
	p := writeConfig(t, fmt.Sprintf(`version: 1
state_dir: %s/state
http: {listen: "127.0.0.1:0", public_url: "http://127.0.0.1:1", tls: {enabled: false}}
api: {tokens: [{name: dash, scope: read, sha256: %s}]}
tftp: {listen: "127.0.0.1:0"}
boot:
  ipxe_dir: %s
  agent: {cmdline: console=ttyS0}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"], boot: agent}
  - {id: ms1-c1n2, macs: ["52:54:00:99:00:12"]}
`, dir, testTokenHash, ipxe))
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err = newDaemon(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	cancel = func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		d.close()
	}
	return "http://" + d.httpLn.Addr().String(), d, cancel
}

// testToken is the read token of startDaemon's config.
const (
	testToken     = "imaged_test-read-token"
	testTokenHash = "409a2032abd02f5bb675794e3100a86df418fa750bf725d2c37ee2d9e9713308"
)

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.Contains(url, "/api/") {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestScriptTokenHelloFlow(t *testing.T) {
	base, _, stop := startDaemon(t)
	defer stop()

	code, body := httpDo(t, "GET", base+"/healthz", "")
	if code != 200 || !strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, "tftp") {
		t.Fatalf("healthz: %d %s", code, body)
	}
	// The copied boot program is served from the assets directory.
	if code, body := httpDo(t, "GET", base+"/boot/assets/ipxe.efi", ""); code != 200 || body != "ipxe-efi" {
		t.Errorf("ipxe.efi: %d %q", code, body)
	}
	code, script := httpDo(t, "GET", base+"/boot/52:54:00:99:00:11.ipxe", "")
	tok := regexp.MustCompile(`imaged\.token=([0-9a-f]+)`).FindStringSubmatch(script)
	if code != 200 || tok == nil {
		t.Fatalf("script: %d\n%s", code, script)
	}
	// The local-boot machine gets no token, and unknown MACs no script.
	if _, s := httpDo(t, "GET", base+"/boot/52:54:00:99:00:12.ipxe", ""); strings.Contains(s, "token") || !strings.Contains(s, "sanboot") {
		t.Errorf("local script:\n%s", s)
	}
	if code, _ := httpDo(t, "GET", base+"/boot/52:54:00:99:00:99.ipxe", ""); code != 404 {
		t.Errorf("unknown MAC: %d", code)
	}

	hello := func(mac, token string) (int, string) {
		return httpDo(t, "POST", base+"/agent/v1/hello", fmt.Sprintf(`{"mac": %q, "token": %q, "agent_version": "test"}`, mac, token))
	}
	if code, body := hello("52:54:00:99:00:12", tok[1]); code != 403 || !strings.Contains(body, `"field": "token"`) {
		t.Errorf("token presented for another MAC: %d %s", code, body)
	}
	if code, body := hello("52:54:00:99:00:11", "0000"); code != 403 {
		t.Errorf("forged token: %d %s", code, body)
	}
	if code, body := hello("52:54:00:99:00:11", tok[1]); code != 200 || !strings.Contains(body, `"machine_id": "ms1-c1n1"`) {
		t.Fatalf("hello: %d %s", code, body)
	}
	var m machines.Machine
	_, body = httpDo(t, "GET", base+"/api/v1/machines/ms1-c1n1", "")
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.LastHello == nil || m.LastHello.IP.String() != "127.0.0.1" {
		t.Errorf("machine after hello: %s", body)
	}
	var ev []machines.Event
	_, body = httpDo(t, "GET", base+"/api/v1/machines/ms1-c1n1/events", "")
	json.Unmarshal([]byte(body), &ev)
	if len(ev) != 2 || ev[0].Kind != "script" || ev[1].Kind != "hello" {
		t.Errorf("events: %s", body)
	}
	_, metrics := httpDo(t, "GET", base+"/metrics", "")
	for _, want := range []string{`imaged_boot_scripts_total{outcome="agent"} 1`, `imaged_boot_scripts_total{outcome="unknown_mac"} 1`, "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestMachinesCommandsReadTheStateFile(t *testing.T) {
	base, d, stop := startDaemon(t)
	_, script := httpDo(t, "GET", base+"/boot/52:54:00:99:00:11.ipxe", "")
	tok := regexp.MustCompile(`imaged\.token=([0-9a-f]+)`).FindStringSubmatch(script)
	httpDo(t, "POST", base+"/agent/v1/hello", fmt.Sprintf(`{"mac": "52:54:00:99:00:11", "token": %q}`, tok[1]))
	d.inv.SawUnknown(net.HardwareAddr{2, 0, 0, 0, 0, 1}, "uefi-pxe", 7)
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("version: 1\nstate_dir: %s\nhttp: {public_url: http://127.0.0.1:1}\n", d.cfg.StateDir)), 0o644)

	// While the daemon holds the file, the command asks its API.
	if _, _, err := runCmd(t, "machines", "unknown", "-server", base); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("machines unknown (API) without a token: %v", err)
	}
	out, _, err := runCmd(t, "machines", "unknown", "-server", base, "-token", testToken)
	if err != nil || !strings.Contains(out, "02:00:00:00:00:01  uefi-pxe  7") {
		t.Errorf("machines unknown (API): %v\n%s", err, out)
	}
	stop()
	// Once it is stopped, from the state file itself.
	out, _, err = runCmd(t, "machines", "list", "-config", cfgPath)
	if err != nil || !regexp.MustCompile(`ms1-c1n1\s+52:54:00:99:00:11.*agent\s+-\s+\d{4}-\d\d-\d\d .* from 127\.0\.0\.1`).MatchString(out) {
		t.Errorf("machines list: %v\n%s", err, out)
	}
	// The hello is in the audit log; the script, fetched while no job waited, was kept in
	// memory only: an anonymous request leaves nothing in the file.
	out, _, err = runCmd(t, "machines", "events", "-config", cfgPath, "ms1-c1n1")
	if err != nil || strings.Contains(out, "script") || !strings.Contains(out, "hello") {
		t.Errorf("machines events: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, "machines", "events", "-config", cfgPath, "nope"); err == nil {
		t.Error("events of an unknown machine succeeded")
	}
}

func TestTokenNew(t *testing.T) {
	out, _, err := runCmd(t, "token", "new", "-scope", "operate", "roller")
	m := regexp.MustCompile(`(?s)\n  (imaged_\S+)\n.*\{name: roller, scope: operate, sha256: ([0-9a-f]{64})\}`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("token new: %v\n%s", err, out)
	}
	if sum := sha256.Sum256([]byte(m[1])); hex.EncodeToString(sum[:]) != m[2] {
		t.Errorf("the printed hash is not the token's SHA-256:\n%s", out)
	}
	out2, _, _ := runCmd(t, "token", "new", "roller")
	if strings.Contains(out2, m[1]) {
		t.Error("two tokens are the same")
	}
	if _, _, err := runCmd(t, "token", "new", "-scope", "root", "x"); exitCode(err) != 2 {
		t.Errorf("a bad scope: %v", err)
	}
}
