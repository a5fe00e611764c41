package vbmc_test

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

// These tests drive the emulator with Redfish clients written by others from the same spec:
// DMTF's redfishtool and OpenStack's sushy (the library behind Ironic), as Debian packages them.
// After each command they check what the blade was asked to do, not only the client's exit code.

// startTLSServer runs the emulator over HTTPS with a certificate from GenerateCA.
func startTLSServer(t *testing.T, fs []*fakeBlade) (ts *testServer, caFile string) {
	t.Helper()
	caFile, cert, key, err := vbmc.GenerateCA(t.TempDir(), []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.PlainHTTP, cfg.CertFile, cfg.KeyFile = false, cert, key
	ts = startServer(t, cfg, blades(fs)...)
	ts.client = tlsClient(t, caFile)
	return ts, caFile
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE override the CA a session was given
	// (psf/requests#3829): without this, sushy's verify=CAFILE would be ignored where the
	// environment sets them.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") && !strings.HasPrefix(kv, "CURL_CA_BUNDLE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out), err
}

func TestRedfishtool(t *testing.T) {
	tool := requireTool(t, "redfishtool", "redfishtool")
	fs := threeBlades()
	f := fs[1]
	ts, _ := startTLSServer(t, fs)
	u, _ := url.Parse(ts.URL())
	// -S Always: HTTPS for every request (redfishtool does not verify certificates).
	common := []string{"-r", u.Host, "-u", testUser, "-p", testPass, "-S", "Always", "-T", "20"}
	rft := func(args ...string) string {
		t.Helper()
		out, err := run(t, tool, append(append([]string{}, common...), args...)...)
		if err != nil {
			t.Fatalf("redfishtool %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	out := rft("Systems", "list")
	for _, id := range []string{"ms1-c1n1", "ms1-c1n2", "ms1-c1n3"} {
		if !strings.Contains(out, `"Id": "`+id+`"`) {
			t.Errorf("Systems list lacks %s", id)
		}
	}
	out = rft("Systems", "-I", "ms1-c1n2", "get", "-P", "PowerState")
	if compact([]byte(out)) != `{"PowerState":"Off"}` {
		t.Errorf("PowerState: %q", out)
	}

	// setBootOverride reads Boot (checking the target against AllowableValues), then PATCHes
	// with If-Match set to the ETag it got.
	rft("Systems", "-I", "ms1-c1n2", "setBootOverride", "Once", "Pxe")
	sys := ts.get(sys2)
	if path(sys, "Boot", "BootSourceOverrideEnabled") != "Once" || path(sys, "Boot", "BootSourceOverrideTarget") != "Pxe" {
		t.Fatalf("after setBootOverride: %v", sys["Boot"])
	}
	wantCalls(t, f)

	rft("Systems", "-I", "ms1-c1n2", "reset", "On")
	wantCalls(t, f, "PowerOn(Pxe)")
	if path(ts.get(sys2), "Boot", "BootSourceOverrideEnabled") != "Disabled" {
		t.Error("the boot did not consume the Once override")
	}
	out = rft("Systems", "-I", "ms1-c1n2", "get", "-P", "PowerState")
	if compact([]byte(out)) != `{"PowerState":"On"}` {
		t.Errorf("PowerState after On: %q", out)
	}

	// redfishtool checks ResetType@Redfish.AllowableValues and refuses Nmi itself.
	if _, err := run(t, tool, append(append([]string{}, common...), "Systems", "-I", "ms1-c1n2", "reset", "Nmi")...); err == nil {
		t.Error("redfishtool sent a reset type the service does not offer")
	}
	wantCalls(t, f)

	// Session authentication: login, token, logout, all through redfishtool.
	rft("-A", "Session", "Systems", "-I", "ms1-c1n2", "reset", "ForceOff")
	wantCalls(t, f, "ForceOff")
	login := rft("SessionService", "login")
	var sess struct {
		Token    string `json:"X-Auth-Token"`
		Location string `json:"SessionLocation"`
	}
	if err := json.Unmarshal([]byte(login), &sess); err != nil || sess.Token == "" {
		t.Fatalf("login output %q: %v", login, err)
	}
	tokenArgs := []string{"-r", u.Host, "-t", sess.Token, "-A", "Session", "-S", "Always"}
	if out, err := run(t, tool, append(tokenArgs, "Systems", "-I", "ms1-c1n1", "get", "-P", "PowerState")...); err != nil || !strings.Contains(out, "Off") {
		t.Fatalf("request with the session token: %v", err)
	}
	if _, err := run(t, tool, append(tokenArgs, "SessionService", "logout", "-l", sess.Location)...); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if n := ts.get("/redfish/v1/SessionService/Sessions")["Members@odata.count"]; n != 0.0 {
		t.Errorf("%v sessions left after redfishtool logged out", n)
	}

	// A raw PATCH, and redfishtool's view of the Managers and Chassis.
	rft("raw", "PATCH", sys2, "-d", `{"Boot":{"BootSourceOverrideEnabled":"Continuous","BootSourceOverrideTarget":"Hdd"}}`)
	if b := ts.get(sys2)["Boot"]; path(b, "BootSourceOverrideEnabled") != "Continuous" || path(b, "BootSourceOverrideTarget") != "Hdd" {
		t.Fatalf("raw PATCH: %v", b)
	}
	if out := rft("Managers", "-I", "ms1", "get", "-P", "ManagerType"); !strings.Contains(out, "EnclosureManager") {
		t.Errorf("manager: %q", out)
	}
	if out := rft("Chassis", "list"); !strings.Contains(out, `"Id": "ms1"`) {
		t.Errorf("chassis: %q", out)
	}
	if out := rft("Systems", "-I", "ms1-c1n3", "EthernetInterfaces", "-i", "NIC1"); !strings.Contains(out, "52:54:00:99:00:13") {
		t.Errorf("ethernet interface: %q", out)
	}
}

// python3WithSushy finds a Python that imports sushy (Debian's python3-sushy is for
// /usr/bin/python3, which may not be the python3 first on PATH).
func python3WithSushy(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import sushy").Run() == nil {
			return p
		}
	}
	requireTool(t, "sushy-python3-module-not-found", "python3-sushy")
	return ""
}

func TestSushy(t *testing.T) {
	py := python3WithSushy(t)
	fs := threeBlades()
	f := fs[1]
	ts, caFile := startTLSServer(t, fs)
	script, err := filepath.Abs("testdata/sushy_client.py")
	if err != nil {
		t.Fatal(err)
	}
	sushy := func(op ...string) map[string]any {
		t.Helper()
		args := append([]string{script, ts.URL(), testUser, testPass, caFile, "ms1-c1n2"}, op...)
		out, err := run(t, py, args...)
		if err != nil {
			t.Fatalf("sushy %s: %v", strings.Join(op, " "), err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
			t.Fatalf("sushy output %q: %v", out, err)
		}
		// sushy logs its session out when the root object goes away.
		if n := ts.get("/redfish/v1/SessionService/Sessions")["Members@odata.count"]; n != 0.0 {
			t.Errorf("sushy %s left %v sessions", strings.Join(op, " "), n)
		}
		return m
	}

	if diff := cmp.Diff(map[string]any{"members": []any{
		"/redfish/v1/Systems/ms1-c1n1", "/redfish/v1/Systems/ms1-c1n2", "/redfish/v1/Systems/ms1-c1n3",
	}}, sushy("systems")); diff != "" {
		t.Errorf("systems (-want +got):\n%s", diff)
	}
	state := sushy("state")
	if diff := cmp.Diff(map[string]any{
		"id": "ms1-c1n2", "power_state": "Off", "boot_enabled": "Disabled", "boot_target": "None",
		"allowed_targets": []any{"Hdd", "None", "Pxe", "UefiHttp"},
		"allowed_resets":  []any{"ForceOff", "ForceRestart", "GracefulRestart", "GracefulShutdown", "On", "PowerCycle"},
		"macs":            []any{"52:54:00:99:00:12"},
	}, state, lowerMACs); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}

	// set_system_boot_options PATCHes with the system's ETag as If-Match.
	sushy("boot-pxe-once")
	if b := ts.get(sys2)["Boot"]; path(b, "BootSourceOverrideEnabled") != "Once" || path(b, "BootSourceOverrideTarget") != "Pxe" {
		t.Fatalf("after set_system_boot_options: %v", b)
	}
	sushy("reset", "On")
	wantCalls(t, f, "PowerOn(Pxe)")
	if st := sushy("state"); st["power_state"] != "On" || st["boot_enabled"] != "Disabled" {
		t.Errorf("after reset On: %v", st)
	}
	sushy("reset", "ForceOff")
	wantCalls(t, f, "ForceOff")
	if st := sushy("state"); st["power_state"] != "Off" {
		t.Errorf("after ForceOff: %v", st)
	}

	sushy("boot-source", "Hdd")
	if b := ts.get(sys2)["Boot"]; path(b, "BootSourceOverrideEnabled") != "Once" || path(b, "BootSourceOverrideTarget") != "Hdd" {
		t.Fatalf("after set_system_boot_source: %v", b)
	}
	sushy("reset", "ForceRestart")
	wantCalls(t, f, "PowerOn(Hdd)")
}

// lowerMACs compares MAC address strings case-insensitively (sushy passes them through).
var lowerMACs = cmp.Transformer("lowerMACs", func(s string) string {
	if len(s) == 17 && strings.Count(s, ":") == 5 {
		return strings.ToLower(s)
	}
	return s
})
