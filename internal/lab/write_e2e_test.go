package lab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/lab/netns"
	"github.com/imaged/imaged/internal/machines"
)

func sha256File(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// TestAgentWritesImage: a blade netboots the agent, which writes a 256 MiB image with a real
// partition table onto its virtio disk; the disk file's SHA-256 must equal the image digest, and
// imaged must record the image as the machine's current one. Then the blob is corrupted: a
// second blade's write fails, names the block, leaves block 0 as it was, and imaged does not
// record the image as running there.
func TestAgentWritesImage(t *testing.T) {
	netns.RequireCommand(t, "sfdisk", "fdisk")
	l := newLab(t, "imt-write")
	ctx := context.Background()
	src := filepath.Join(l.Dir, "debian.img")
	if err := lab.MakeDiskImage(src, 256, 100, "e2e"); err != nil {
		t.Fatal(err)
	}
	digest := sha256File(t, src, 256<<20)
	good := lab.Blade{ID: "ms1-c1n5", MAC: "52:54:00:99:00:15", IP: "10.99.0.15", Firmware: "bios", Disk: filepath.Join(l.Dir, "disk5.img")}
	bad := lab.Blade{ID: "ms1-c1n6", MAC: "52:54:00:99:00:16", IP: "10.99.0.16", Firmware: "bios", Disk: filepath.Join(l.Dir, "disk6.img")}
	cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{good, bad}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.Run(ctx, "image", "import", "-config", cfg, "debian@12", src)
	if err != nil || !strings.Contains(out, digest) {
		t.Fatalf("import: %v\n%s", err, out)
	}
	for _, b := range []lab.Blade{good, bad} {
		if _, err := l.Run(ctx, "machines", "assign", "-config", cfg, b.ID, "debian@12"); err != nil {
			t.Fatal(err)
		}
		// A disk with garbage in its first block, so that "block 0 not written" can be seen.
		junk := make([]byte, images.BlockSize)
		rand.Read(junk)
		os.WriteFile(b.Disk, junk, 0o644)
		os.Truncate(b.Disk, 512<<20)
	}
	if err := l.StartDaemon(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	// The good write.
	vm, m := writeAndWait(t, l, good, `imaged agent: result accepted`)
	vm.Stop()
	if got := sha256File(t, good.Disk, 256<<20); got != digest {
		t.Errorf("disk holds %s, the image is %s", got, digest)
	}
	if m.CurrentImage.String() != digest {
		t.Errorf("imaged records current image %q, want %s", m.CurrentImage, digest)
	}

	// Corrupt one byte of block 100 of the stored blob; the second blade's write must fail.
	blob := filepath.Join(l.Dir, "state/images/blobs/sha256", strings.TrimPrefix(digest, "sha256:"))
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	f.ReadAt(one[:], 100*images.BlockSize+5)
	one[0] ^= 0x55
	f.WriteAt(one[:], 100*images.BlockSize+5)
	f.Close()
	before, _ := os.ReadFile(bad.Disk)
	vm, m = writeAndWait(t, l, bad, `imaged agent: result reported \(failed write\)`)
	vm.Stop()
	if _, err := vm.WaitFor(context.Background(), regexp.MustCompile(`imaged agent: WRITE FAILED: .*checksum mismatch in block 100`)); err != nil {
		t.Errorf("the agent did not name the corrupt block: %v", err)
	}
	after, _ := os.ReadFile(bad.Disk)
	if !bytes.Equal(before[:images.BlockSize], after[:images.BlockSize]) {
		t.Error("block 0 was written by a failed write")
	}
	if !m.CurrentImage.IsZero() {
		t.Errorf("imaged records %s as running an image it could not write", m.CurrentImage)
	}
	ev, _ := l.Events(ctx, bad.ID)
	requireEvents(t, ev, map[string]string{"write": `failed to write debian@12: .*block 100`})
}

// writeAndWait boots b and waits for a console line matching done, then returns the machine as
// imaged sees it.
func writeAndWait(t *testing.T, l *lab.Lab, b lab.Blade, done string) (*lab.Running, machines.Machine) {
	t.Helper()
	vmSlots <- struct{}{}
	defer func() { <-vmSlots }()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vm := boot(ctx, t, l, b)
	t.Cleanup(vm.Stop) // before boot's look at the console: cleanups run last first
	line, err := vm.WaitFor(ctx, regexp.MustCompile(done))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s at %.1f s: %s", b.ID, line.At.Seconds(), line.Text)
	var m machines.Machine
	if err := l.Get(ctx, "/api/v1/machines/"+b.ID, &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, "imaged agent: wrote") || strings.Contains(l.Text, "WRITE FAILED") {
			t.Logf("%s", l.Text)
		}
	}
	return vm, m
}
