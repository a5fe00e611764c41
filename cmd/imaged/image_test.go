package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/config"
)

// The catalog commands work the same with the state file closed (they open it) and while the
// daemon holds it (they go through its control socket).
func TestImageCommands(t *testing.T) {
	t.Run("state file", func(t *testing.T) {
		dir := t.TempDir()
		testImageCommands(t, dir, imageConfig(t, dir), "alice")
	})
	t.Run("running daemon", func(t *testing.T) {
		dir := t.TempDir()
		path := imageConfig(t, dir)
		d := serveConfig(t, path)
		// Changes through the socket name the operator and the socket peer.
		testImageCommands(t, dir, path, fmt.Sprintf("alice (uid %d via the control socket)", os.Getuid()))
		// The daemon's own view changed at once: no restart, no reload.
		m, _ := d.inv.Machine("ms1-c1n1")
		if img, err := d.st.ResolveImage(images.Ref{Name: "debian", Tag: "2"}); err != nil || m.AssignedImage != img.Digest {
			t.Errorf("daemon's inventory: assigned %q, debian@2 is %v %v", m.AssignedImage, img.Digest, err)
		}
		ev, _ := d.inv.Events("ms1-c1n1", 0)
		if len(ev) == 0 || !strings.Contains(ev[len(ev)-1].Message, "assigned debian@2") || !strings.Contains(ev[len(ev)-1].Message, "by alice (uid") {
			t.Errorf("events: %+v", ev)
		}
	})
}

// serveConfig runs the daemon of the config at path until the test ends.
func serveConfig(t *testing.T, path string) *daemon {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		d.close()
	})
	return d
}

func imageConfig(t *testing.T, dir string) string {
	cfg := filepath.Join(dir, "imaged.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
state_dir: %s/state
http: {listen: "127.0.0.1:0", public_url: "http://127.0.0.1:1", tls: {enabled: false}}
dhcp: {mode: "off"}
tftp: {enabled: false}
boot: {assets_dir: %s/boot, ipxe_dir: %s/ipxe}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"]}
`, dir, dir, dir)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755)
	for _, f := range []string{"undionly.kpxe", "ipxe.efi"} {
		os.WriteFile(filepath.Join(dir, "ipxe", f), []byte(f), 0o644)
	}
	return cfg
}

func testImageCommands(t *testing.T, dir, cfg, by string) {

	mk := func(name string, blocks, zeroEvery int) (string, string) {
		b := make([]byte, blocks*images.BlockSize+123)
		rand.Read(b)
		for i := 0; i < blocks; i += zeroEvery {
			clear(b[i*images.BlockSize : (i+1)*images.BlockSize])
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		sum := sha256.Sum256(b)
		return p, "sha256:" + hex.EncodeToString(sum[:])
	}
	v1, d1 := mk("v1.raw", 8, 2)
	v2, d2 := mk("v2.raw", 8, 3)
	im := func(args ...string) (string, error) {
		out, _, err := runCmd(t, append([]string{"image", args[0], "-config", cfg, "-by", "alice"}, args[1:]...)...)
		return out, err
	}
	if out, err := im("import", "debian@1", v1); err != nil || !strings.Contains(out, d1) || !strings.Contains(out, "5 of 9 blocks hold data") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if _, err := im("import", "debian@1", v2); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("re-import under the same version: %v", err)
	}
	if _, err := im("import", "debian@2", v2); err != nil {
		t.Fatal(err)
	}
	if _, err := im("import", "debian@3", filepath.Join(dir, "missing.raw")); err == nil {
		t.Error("import of a missing file succeeded")
	}
	if _, err := im("promote", "debian@1", "production"); err != nil {
		t.Fatal(err)
	}
	if out, err := im("promote", "debian@2", "production"); err != nil || !strings.Contains(out, "1 → 2 (by "+by+")") {
		t.Errorf("promote: %v %s", err, out)
	}
	out, _ := im("list")
	if !strings.Contains(out, "debian@2") || !strings.Contains(out, "production") || strings.Contains(out, "debian@3") {
		t.Errorf("list:\n%s", out)
	}
	if out, err := im("show", "debian@production"); err != nil || !strings.Contains(out, d2) || !strings.Contains(out, `"by": "`+by+`"`) {
		t.Errorf("show: %v\n%s", err, out)
	}
	if out, err := im("verify", "debian@1"); err != nil || !strings.Contains(out, "ok") {
		t.Errorf("verify: %v %s", err, out)
	}
	// One flipped byte in block 3 of the stored blob: verify names the block.
	blob := filepath.Join(dir, "state/images/blobs/sha256", strings.TrimPrefix(d1, "sha256:"))
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip the byte, not set it: the image is random, and a byte that was 0xff already would
	// leave the blob intact one time in 256.
	one := make([]byte, 1)
	f.ReadAt(one, 3*images.BlockSize+10)
	f.WriteAt([]byte{one[0] ^ 0xff}, 3*images.BlockSize+10)
	f.Close()
	if _, err := im("verify", "debian@1"); err == nil || !strings.Contains(err.Error(), "CORRUPT: 1 of 9 blocks") || !strings.Contains(err.Error(), "3 (bytes 1572864-2097151)") {
		t.Errorf("verify of a corrupt blob: %v", err)
	}
	if out, err := im("rollback", "debian@production"); err != nil || !strings.Contains(out, "2 → 1") {
		t.Errorf("rollback: %v %s", err, out)
	}
	if out, _, err := runCmd(t, "machines", "assign", "-config", cfg, "-by", "alice", "ms1-c1n1", "debian@production"); err != nil ||
		!strings.Contains(out, d1) || !strings.Contains(out, "and follows debian@production") {
		t.Errorf("assign through a channel: %v %s", err, out)
	}
	if out, _, err := runCmd(t, "machines", "assign", "-config", cfg, "-by", "alice", "ms1-c1n1", "debian@2"); err != nil || !strings.Contains(out, d2) || strings.Contains(out, "follows") {
		t.Errorf("assign: %v %s", err, out)
	}
	if _, err := im("delete", "debian@2"); err == nil || !strings.Contains(err.Error(), "machine ms1-c1n1") {
		t.Errorf("delete of an assigned image: %v", err)
	}
	if _, err := im("delete", "debian@1"); err == nil || !strings.Contains(err.Error(), "channel debian@production") {
		t.Errorf("delete of a channel's image: %v", err)
	}
	if out, err := im("prune", "-keep", "1"); err != nil || !strings.Contains(out, "0 pruned") {
		t.Errorf("prune: %v %s", err, out)
	}
	if _, err := os.Stat(blob); err != nil {
		t.Error("a referenced blob is gone")
	}
}
