package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

// bmcLab is a Redfish emulator on 127.0.0.1 with two blades (HTTPS, its own CA) and a config
// whose machines are behind it: ms1-c1n1 found by its MAC, ms1-c1n2 by bmc_system.
func bmcLab(t *testing.T) (cfgPath string, blades []*vbmc.MemBlade) {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bmc"), 0o700)
	ca, cert, key, err := vbmc.GenerateCA(filepath.Join(dir, "bmc"), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	var bs []vbmc.Blade
	for i := range 2 {
		mac, _ := net.ParseMAC(fmt.Sprintf("52:54:00:99:00:%02x", 0x11+i))
		b := vbmc.NewMemBlade(fmt.Sprintf("blade-%d", i+1), mac)
		blades = append(blades, b)
		bs = append(bs, b)
	}
	srv, err := vbmc.New(vbmc.Config{Addr: "127.0.0.1:0", CertFile: cert, KeyFile: key, Username: "admin", Password: "s3cret-pw"}, bs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cred := filepath.Join(dir, "bmc", "cred")
	os.WriteFile(cred, []byte("username: admin\npassword: s3cret-pw\n"), 0o600)
	cfgPath = imageConfig(t, dir)
	b, _ := os.ReadFile(cfgPath)
	text := strings.Replace(string(b), "machines:\n  - {id: ms1-c1n1, macs: [\"52:54:00:99:00:11\"]}\n", fmt.Sprintf(`bmcs:
  - {name: ms1, url: %q, ca_file: %q, credentials: %q}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"], bmc: ms1, probe: {kind: tcp, port: 22}}
  - {id: ms1-c1n2, macs: ["52:54:00:99:00:99"], bmc: ms1, bmc_system: blade-2}
  - {id: ms1-c1n3, macs: ["52:54:00:99:00:13"]}
`, srv.URL(), ca, cred), 1)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, blades
}

// The bmc commands against an independent Redfish implementation: by themselves, then through
// a running daemon's control socket.
func TestBMCCommands(t *testing.T) {
	cfgPath, blades := bmcLab(t)
	steps := func(t *testing.T) {
		out, stderr, err := runCmd(t, "bmc", "inventory", "-config", cfgPath, "ms1")
		if err != nil || !strings.Contains(out, "BMC ms1: 2 systems") || !strings.Contains(out, "blade-2") {
			t.Fatalf("inventory ms1: %v\n%s%s", err, out, stderr)
		}
		if out, _, err := runCmd(t, "bmc", "boot", "-config", cfgPath, "-by", "alice", "ms1-c1n1", "pxe"); err != nil || !strings.Contains(out, "system blade-1") || !strings.Contains(out, "Once: pxe") {
			t.Errorf("boot (system found by MAC): %v\n%s", err, out)
		}
		if out, _, err := runCmd(t, "bmc", "power", "-config", cfgPath, "ms1-c1n1", "on"); err != nil || !strings.Contains(out, "power          On") {
			t.Errorf("power on: %v\n%s", err, out)
		}
		if out, _, err := runCmd(t, "bmc", "power", "-config", cfgPath, "ms1-c1n2", "cycle"); err != nil || !strings.Contains(out, "system blade-2") {
			t.Errorf("power cycle (system from bmc_system): %v\n%s", err, out)
		}
		if out, _, err := runCmd(t, "bmc", "power", "-config", cfgPath, "ms1-c1n1", "off"); err != nil || !strings.Contains(out, "power          Off") {
			t.Errorf("power off: %v\n%s", err, out)
		}
		if _, _, err := runCmd(t, "bmc", "power", "-config", cfgPath, "ms1-c1n3", "on"); err == nil || !strings.Contains(err.Error(), "no BMC configured") {
			t.Errorf("a machine without a BMC: %v", err)
		}
		if _, _, err := runCmd(t, "bmc", "power", "-config", cfgPath, "ms1-c1n1", "explode"); err == nil || exitCode(err) != 2 {
			t.Errorf("an unknown action: %v", err)
		}
	}
	t.Run("by itself", func(t *testing.T) {
		steps(t)
		if got := fmt.Sprint(blades[0].Boots()); got != "[Pxe]" {
			t.Errorf("blade-1 booted %s, want one PXE boot", got)
		}
	})
	t.Run("through the daemon", func(t *testing.T) {
		d := serveConfig(t, cfgPath)
		steps(t)
		if got := fmt.Sprint(blades[0].Boots()); got != "[Pxe Pxe]" {
			t.Errorf("blade-1 booted %s, want a second PXE boot", got)
		}
		// A reimage job through the daemon: it fences the machine through the emulator, sets
		// PXE once and powers it on; nothing netboots here, so it waits until cancelled.
		img := filepath.Join(t.TempDir(), "img.raw")
		os.WriteFile(img, []byte(strings.Repeat("imaged", 100000)), 0o644)
		if out, _, err := runCmd(t, "image", "import", "-config", cfgPath, "debian@1", img); err != nil {
			t.Fatalf("import: %v %s", err, out)
		}
		out, _, err := runCmd(t, "machines", "reimage", "-config", cfgPath, "-by", "alice", "ms1-c1n1", "debian@1")
		if err != nil || !strings.Contains(out, "reimage of ms1-c1n1 submitted") {
			t.Fatalf("reimage: %v %s", err, out)
		}
		id := strings.Fields(strings.TrimPrefix(out, "job "))[0]
		id = strings.TrimSuffix(id, ":")
		if _, _, err := runCmd(t, "machines", "reimage", "-config", cfgPath, "ms1-c1n1", "debian@1"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
			t.Errorf("a second reimage of a busy machine: %v", err)
		}
		if _, _, err := runCmd(t, "machines", "reimage", "-config", cfgPath, "ms1-c1n3", "debian@1"); err == nil || !strings.Contains(err.Error(), "no BMC") {
			t.Errorf("reimage of a machine without a BMC: %v", err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _, _ = runCmd(t, "jobs", "show", "-config", cfgPath, id)
			if strings.Contains(out, "phase netbooting") || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(out, "phase netbooting") || !strings.Contains(out, "fencing") || !strings.Contains(out, "by alice (uid") {
			t.Errorf("jobs show: the job should have fenced, set the boot and powered on:\n%s", out)
		}
		if !strings.Contains(out, "readiness: tcp/22") {
			t.Errorf("jobs show: the job should wait for the machine's own probe (machines[].probe):\n%s", out)
		}
		if got := fmt.Sprint(blades[0].Boots()); got != "[Pxe Pxe Pxe]" {
			t.Errorf("blade-1 booted %s, want a third PXE boot from the job", got)
		}
		if out, _, err := runCmd(t, "jobs", "cancel", "-config", cfgPath, id); err != nil || !strings.Contains(out, "job "+id) {
			t.Errorf("jobs cancel: %v %s", err, out)
		}
		if out, _, err := runCmd(t, "jobs", "list", "-config", cfgPath, "-machine", "ms1-c1n1"); err != nil || !strings.Contains(out, id) {
			t.Errorf("jobs list: %v %s", err, out)
		}
		ev, _ := d.inv.Events("ms1-c1n1", 0)
		var msgs []string
		for _, e := range ev {
			msgs = append(msgs, e.Message)
		}
		if s := strings.Join(msgs, "\n"); !strings.Contains(s, "next boot once from pxe (read back) by alice (uid") || !strings.Contains(s, "power off (read back) by") {
			t.Errorf("the daemon's events for ms1-c1n1:\n%s", s)
		}
	})
}
