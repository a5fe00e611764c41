package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/lab/netns"
	"github.com/imaged/imaged/internal/lab/vbmc"
)

// TestPowerVMThroughRedfish drives one QEMU blade (SeaBIOS + iPXE ROM, no disk, no OS) in a
// network namespace through the virtual BMC's HTTP API, and checks each answer against the
// real process: its existence, its command line, its console and QMP.
func TestPowerVMThroughRedfish(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireCommand(t, "qemu-system-x86_64", "qemu-system-x86")
	if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
		t.Skip("skipping: the NIC's iPXE option ROM is missing (apt-get install ipxe-qemu)")
	}
	pair := netns.NewPair(t)
	pv, err := lab.NewPowerVM(lab.VM{Name: "ms1-c1n1", Netns: pair.Cli, Tap: pair.AddTap(), MAC: "52:54:00:99:00:21",
		Firmware: "bios", Memory: 128, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pv.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() || testing.Verbose() {
			console, _ := os.ReadFile(pv.ConsolePath())
			t.Logf("--- console (last 40 lines)\n%s", tail(console, 40))
		}
	})
	bmc := startBMC(t, pv)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	if st := bmc.system(t)["PowerState"]; st != "Off" || pv.PID() != 0 {
		t.Fatalf("a new blade is %v (pid %d)", st, pv.PID())
	}

	// PXE once, then On: QEMU runs, network first this boot only, guest resets allowed.
	bmc.mustDo(t, "PATCH", "", `{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`, http.StatusOK)
	bmc.mustDo(t, "POST", "/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`, http.StatusNoContent)
	pid := pv.PID()
	if pid == 0 || !alive(pid) {
		t.Fatalf("no QEMU process after On (pid %d)", pid)
	}
	cmdline := procCmdline(t, pid)
	if !strings.Contains(cmdline, "-boot once=n,order=c") || strings.Contains(cmdline, "-no-reboot") || !strings.Contains(cmdline, "-qmp unix:") {
		t.Errorf("QEMU command line: %s", cmdline)
	}
	sys := bmc.system(t)
	if sys["PowerState"] != "On" || field(sys, "Boot", "BootSourceOverrideEnabled") != "Disabled" {
		t.Fatalf("after On: PowerState %v, override %v", sys["PowerState"], field(sys, "Boot", "BootSourceOverrideEnabled"))
	}
	// SeaBIOS hands the first boot to the NIC's iPXE ROM without trying the disk.
	run := pv.Running()
	for _, re := range []string{`SeaBIOS`, `iPXE initialising devices`} {
		if _, err := run.WaitFor(ctx, regexp.MustCompile(re)); err != nil {
			t.Fatal(err)
		}
	}
	if n := countLines(run, "Booting from Hard Disk"); n != 0 {
		t.Fatal("the PXE-once boot tried the disk first")
	}
	if st, err := pv.QueryStatus(ctx); err != nil || st != "running" {
		t.Fatalf("query-status: %q %v", st, err)
	}
	// A second On is refused: the machine is on, and nothing happened to it.
	bmc.mustDo(t, "POST", "/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`, http.StatusConflict)
	if pv.PID() != pid {
		t.Fatal("a refused On restarted QEMU")
	}

	// A reset keeps the machine On (no -no-reboot): the firmware starts again in the same
	// process, and the once-override is spent: this time SeaBIOS tries the disk first.
	banners := countLines(run, "SeaBIOS")
	if err := pv.QMP(ctx, "system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, func() bool { return countLines(run, "SeaBIOS") > banners })
	if _, err := run.WaitFor(ctx, regexp.MustCompile(`Booting from Hard Disk`)); err != nil {
		t.Fatal(err)
	}
	if pv.PID() != pid || !alive(pid) || bmc.system(t)["PowerState"] != "On" {
		t.Fatal("a reset powered the blade off")
	}

	// The ACPI power button, with no OS to hear it: the BMC answers at once, the blade stays On
	// (that is the truth), and a bounded GracefulShutdown says so with the deadline.
	bmc.mustDo(t, "POST", "/Actions/ComputerSystem.Reset", `{"ResetType":"GracefulShutdown"}`, http.StatusNoContent)
	gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
	err = pv.GracefulShutdown(gctx)
	gcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GracefulShutdown of a firmware without OS: %v, want the deadline", err)
	}
	if bmc.system(t)["PowerState"] != "On" || !alive(pid) {
		t.Fatal("Off although nothing handled the power button")
	}

	// ForceOff: the process is gone and Redfish says Off.
	bmc.mustDo(t, "POST", "/Actions/ComputerSystem.Reset", `{"ResetType":"ForceOff"}`, http.StatusNoContent)
	if alive(pid) {
		t.Fatalf("QEMU (pid %d) survived ForceOff", pid)
	}
	if st := bmc.system(t)["PowerState"]; st != "Off" || pv.PID() != 0 {
		t.Fatalf("after ForceOff: %v", st)
	}

	// On again, without override: the disk order, in a new process. Then the process dies
	// behind the BMC's back (a crash): the state follows the process, not the last command.
	bmc.mustDo(t, "POST", "/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`, http.StatusNoContent)
	pid2 := pv.PID()
	if pid2 == 0 || pid2 == pid || !strings.Contains(procCmdline(t, pid2), "-boot order=c") {
		t.Fatalf("second power-on: pid %d, cmdline %s", pid2, procCmdline(t, pid2))
	}
	if _, err := pv.Running().WaitFor(ctx, regexp.MustCompile(`Booting from Hard Disk`)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, func() bool { return bmc.system(t)["PowerState"] == "Off" })

	// The console survived both runs, with a marker for each power-on and power-off, and the
	// BMC serves it.
	tail := bmc.mustDo(t, "GET", "/Oem/Imaged/ConsoleLog?tail=500", "", http.StatusOK)
	for _, want := range []string{"power on (boot Pxe, qemu -boot once=n,order=c)", "power off: ForceOff killed QEMU",
		"power on (boot None, qemu -boot order=c)", "power off: QEMU exited: signal: killed", "SeaBIOS", "iPXE"} {
		if !strings.Contains(tail, want) {
			t.Errorf("console log lacks %q", want)
		}
	}
	if n := strings.Count(tail, "===== "); n != 4 {
		t.Errorf("%d marker lines, want 4", n)
	}
}

func TestNewPowerVMValidates(t *testing.T) {
	if _, err := lab.NewPowerVM(lab.VM{Name: "x", Netns: "ns", Tap: "tap1", MAC: "nope", Dir: t.TempDir()}); err == nil {
		t.Error("bad MAC accepted")
	}
	if _, err := lab.NewPowerVM(lab.VM{Name: "x", Netns: "ns", Tap: "tap1", MAC: "52:54:00:00:00:01", Dir: "/nonexistent"}); err == nil {
		t.Error("missing directory accepted")
	}
	deep := t.TempDir() + "/" + strings.Repeat("d", 90)
	if err := os.Mkdir(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	pv, err := lab.NewPowerVM(lab.VM{Name: "ms1-c1n1", Netns: "ns", Tap: "tap1", MAC: "52:54:00:00:00:01", Dir: deep})
	if err != nil {
		t.Fatal(err)
	}
	if len(pv.QMPPath()) > 100 || pv.PowerState() != vbmc.StateOff || pv.BootMode() != "Legacy" {
		t.Errorf("QMP path %s (%d bytes), state %s", pv.QMPPath(), len(pv.QMPPath()), pv.PowerState())
	}
	if err := pv.ForceOff(t.Context()); err != nil {
		t.Errorf("ForceOff of an Off blade: %v", err)
	}
	if err := pv.GracefulShutdown(t.Context()); err != nil {
		t.Errorf("GracefulShutdown of an Off blade: %v", err)
	}
	if _, err := pv.QueryStatus(t.Context()); err == nil {
		t.Error("QMP to an Off blade succeeded")
	}
	if err := pv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pv.PowerOn(t.Context(), vbmc.Boot{}); err == nil {
		t.Error("PowerOn after Close succeeded")
	}
}

// bmcClient talks to a vbmc.Server on 127.0.0.1 about one system.
type bmcClient struct {
	url, path string
}

func startBMC(t *testing.T, pv *lab.PowerVM) *bmcClient {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := vbmc.New(vbmc.Config{Addr: "127.0.0.1:0", PlainHTTP: true, Username: "admin", Password: "pw",
		GracefulTimeout: 3 * time.Second}, []vbmc.Blade{pv}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &bmcClient{url: s.URL(), path: "/redfish/v1/Systems/" + pv.ID()}
}

// mustDo sends a request about the system (sub is appended to its path) and returns the body.
func (c *bmcClient) mustDo(t *testing.T, method, sub, body string, want int) string {
	t.Helper()
	req, err := http.NewRequest(method, c.url+c.path+sub, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", "pw")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, sub, resp.StatusCode, want, b)
	}
	return string(b)
}

func (c *bmcClient) system(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(c.mustDo(t, "GET", "", "", http.StatusOK)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func field(doc map[string]any, keys ...string) any {
	var v any = doc
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func procCmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("QEMU pid %d: %v", pid, err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func countLines(r *lab.Running, sub string) int {
	n := 0
	for _, l := range r.Lines() {
		if strings.Contains(l.Text, sub) {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met:", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
