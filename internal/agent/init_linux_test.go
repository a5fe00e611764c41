package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunInitRefusesOutsidePID1(t *testing.T) {
	err := RunInit(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Fatalf("RunInit as pid %d: %v", os.Getpid(), err)
	}
}

// No interface with the MAC: a loud error naming the MAC and what is there, after the timeout.
// Only reads the interface list, so it runs anywhere.
func TestWaitInterfaceMissing(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:5e:ff:ff:fe")
	start := time.Now()
	_, err := waitInterface(context.Background(), mac, 300*time.Millisecond)
	if err == nil {
		t.Fatal("found an interface with a made-up MAC")
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v", took)
	}
	for _, want := range []string{"02:00:5e:ff:ff:fe", "after 300ms", "present:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	if err := Run(context.Background(), Config{}, nil); err == nil || !strings.Contains(err.Error(), "imaged.server") {
		t.Errorf("Run without a server: %v", err)
	}
}

// Module files that cannot be opened are logged and counted, never fatal; no order file means
// nothing to load. (Loading real modules needs a kernel of our own: the QEMU check does that.)
func TestLoadModulesMissingFiles(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	loaded, total, err := loadModules(filepath.Join(dir, "none"), dir, log)
	if err != nil || loaded != 0 || total != 0 {
		t.Errorf("no order file: %d/%d %v", loaded, total, err)
	}
	os.WriteFile(filepath.Join(dir, "modules.order"), []byte("virtio_ring\n\n# comment\nvirtio\n"), 0o644)
	loaded, total, err = loadModules(filepath.Join(dir, "modules.order"), dir, log)
	if err != nil || loaded != 0 || total != 2 {
		t.Errorf("missing .ko files: %d/%d %v", loaded, total, err)
	}
	if !strings.Contains(logs.String(), "module=virtio_ring") || !strings.Contains(logs.String(), "module=virtio ") {
		t.Errorf("failures not logged:\n%s", logs.String())
	}
}

func TestSplitCmdline(t *testing.T) {
	got := strings.Join(splitCmdline(`a=1  b="x y" "c=d e" f -- g=2`), "|")
	if got != "a=1|b=x y|c=d e|f" {
		t.Errorf("got %q", got)
	}
}
