package lab_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/lab"
)

// TestChassisBMCNetboot is the virtual chassis from the outside, through the CLI an operator
// uses: `imaged lab up --blades 2`; `imaged bmc boot ms1-c1n2 pxe` and `imaged bmc power
// ms1-c1n2 on` make that blade netboot the agent, which says hello; powered off, the BMC reports
// Off and its QEMU is gone; `imaged lab down` leaves no namespace and no directory.
func TestChassisBMCNetboot(t *testing.T) {
	requireLab(t)
	bin := imagedBinary(t)
	dir := filepath.Join(t.TempDir(), "chassis")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("imaged %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	vmSlots <- struct{}{}
	defer func() { <-vmSlots }()
	assetsMu.Lock()
	out := run("lab", "up", "-blades", "2", "-dir", dir, "-cache", cacheDir())
	assetsMu.Unlock()
	t.Log(out)
	downed := false
	defer func() {
		if !downed {
			if t.Failed() {
				for _, f := range []string{"imaged.log", "bmc.log", "console/ms1-c1n2.log"} {
					if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
						t.Logf("--- %s (last 40 lines)\n%s", f, tail(b, 40))
					}
				}
			}
			exec.Command(bin, "lab", "down", "-dir", dir).Run()
		}
	}()
	cfg := filepath.Join(dir, "imaged.yaml")
	if out := run("lab", "status", "-dir", dir); !strings.Contains(out, "ms1-c1n1") || strings.Count(out, " Off ") != 2 {
		t.Fatalf("lab status: both blades should be Off:\n%s", out)
	}

	// Through the daemon's control socket, as root.
	control := api.NewControlClient(filepath.Join(dir, "state", "control.sock"), "test")
	get := func(path string, v any) error { return control.Do(context.Background(), "GET", path, nil, v) }

	start := time.Now()
	if out := run("bmc", "boot", "-config", cfg, "ms1-c1n2", "pxe"); !strings.Contains(out, "Once: pxe") {
		t.Errorf("bmc boot:\n%s", out)
	}
	if out := run("bmc", "power", "-config", cfg, "ms1-c1n2", "on"); !regexp.MustCompile(`power\s+On`).MatchString(out) {
		t.Errorf("bmc power on:\n%s", out)
	}
	deadline := time.Now().Add(150 * time.Second)
	var m api.MachineView
	for {
		if err := get("/api/v1/machines/ms1-c1n2", &m); err == nil && m.LastHello != nil && m.LastHello.Time.After(start) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agent hello from ms1-c1n2 within 150 s of power on (machine %+v)", m)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("ms1-c1n2: agent hello %.1f s after power on, from %s", m.LastHello.Time.Sub(start).Seconds(), m.LastHello.IP)
	if m.LastHello.IP.String() != "10.99.0.12" {
		t.Errorf("agent address %s, want the reservation 10.99.0.12", m.LastHello.IP)
	}
	// The other blade was never powered on.
	var other api.MachinePower
	if err := get("/api/v1/machines/ms1-c1n1/bmc", &other); err != nil || other.System.Power != "Off" {
		t.Errorf("ms1-c1n1: %v %+v", err, other)
	}

	if out := run("bmc", "power", "-config", cfg, "ms1-c1n2", "off"); !regexp.MustCompile(`power\s+Off`).MatchString(out) {
		t.Errorf("bmc power off:\n%s", out)
	}
	if out := run("bmc", "inventory", "-config", cfg, "-json", "ms1-c1n2"); !strings.Contains(out, `"power": "Off"`) || !strings.Contains(out, `"enabled": "Disabled"`) {
		t.Errorf("bmc inventory after power off (the once-override must be spent):\n%s", out)
	}
	if pids, _ := exec.Command("ip", "netns", "pids", lab.ChassisPrefix+"-cli").Output(); strings.TrimSpace(string(pids)) != "" {
		t.Errorf("processes still run in the blades' namespace after power off: %s", pids)
	}
	var ev []map[string]any
	if err := get("/api/v1/machines/ms1-c1n2/events", &ev); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range ev {
		kinds = append(kinds, fmt.Sprint(e["kind"]))
	}
	if s := strings.Join(kinds, " "); !strings.Contains(s, "power") || !strings.Contains(s, "hello") {
		t.Errorf("events of ms1-c1n2: %s", s)
	}

	out = run("lab", "down", "-dir", dir)
	downed = true
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab down left %s: %v", dir, err)
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), lab.ChassisPrefix+"-") {
		t.Errorf("lab down left namespaces:\n%s", ns)
	}
}
