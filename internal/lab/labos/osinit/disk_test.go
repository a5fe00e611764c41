package osinit

import (
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The digest covers exactly the first n bytes: what follows them does not count, and every byte
// within them does.
func TestDiskDigest(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	img := make([]byte, 3<<20+517) // not a multiple of the read buffer
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	disk := append(append([]byte(nil), img...), make([]byte, 1<<20)...)
	disk[len(img)+10] = 0xff // beyond the image: must not matter
	p := filepath.Join(dir, "disk")
	if err := os.WriteFile(p, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(img)
	got, err := DiskDigest(context.Background(), p, int64(len(img)))
	if err != nil || got != want {
		t.Fatalf("DiskDigest = %s, %v; want sha256:%x", got, err, want)
	}
	if !strings.HasPrefix(got.String(), "sha256:") || len(got.String()) != 71 {
		t.Errorf("digest string %q", got)
	}
	// One byte flipped inside the image changes the digest.
	disk[len(img)-1] ^= 1
	os.WriteFile(p, disk, 0o644)
	if got, err := DiskDigest(context.Background(), p, int64(len(img))); err != nil || got == want {
		t.Errorf("last byte flipped: %s, %v", got, err)
	}
	// A disk shorter than the image is an error, never a digest of what is there.
	_, err = DiskDigest(context.Background(), p, int64(len(disk))+1)
	if !errors.Is(err, ErrShortDisk) || !strings.Contains(err.Error(), "ends after") {
		t.Errorf("short disk: %v", err)
	}
	if _, err := DiskDigest(context.Background(), filepath.Join(dir, "none"), 1); err == nil {
		t.Error("no disk: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DiskDigest(ctx, p, int64(len(img))); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// fakeSys makes a /sys/block with the given disks (name → removable).
func fakeSys(t *testing.T, disks map[string]bool) string {
	t.Helper()
	dir := t.TempDir()
	for name, rm := range disks {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "size"), []byte("131072\n"), 0o644)
		r := "0\n"
		if rm {
			r = "1\n"
		}
		os.WriteFile(filepath.Join(d, "removable"), []byte(r), 0o644)
	}
	return dir
}

func TestBootDisk(t *testing.T) {
	cfg := Config{DiskTimeout: 300 * time.Millisecond, DevDir: "/dev"}
	cfg.SysBlock = fakeSys(t, map[string]bool{"vda": false, "loop0": false, "sr0": true, "sdb": true, "ram0": false})
	d, err := bootDisk(context.Background(), &cfg)
	if err != nil || d.Path != "/dev/vda" || d.Size != 64<<20 {
		t.Errorf("one virtio disk among loop, cdrom, USB stick and ram: %+v %v", d, err)
	}
	cfg.SysBlock = fakeSys(t, map[string]bool{"vda": false, "nvme0n1": false})
	if _, err := bootDisk(context.Background(), &cfg); err == nil || !strings.Contains(err.Error(), "imaged.disk=") {
		t.Errorf("two disks: %v", err)
	}
	cfg.SysBlock = fakeSys(t, map[string]bool{"loop0": false})
	start := time.Now()
	if _, err := bootDisk(context.Background(), &cfg); err == nil || !strings.Contains(err.Error(), "no virtio, SATA or NVMe disk after 300ms") {
		t.Errorf("no disk: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", took)
	}
	// imaged.disk names the disk, whatever /sys/block says; here a file.
	p := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(p, []byte("x"), 0o644)
	cfg.Disk = p
	if d, err := bootDisk(context.Background(), &cfg); err != nil || d.Path != p {
		t.Errorf("imaged.disk=%s: %+v %v", p, d, err)
	}
	cfg.Disk = p + "-none"
	if _, err := bootDisk(context.Background(), &cfg); err == nil || !strings.Contains(err.Error(), "not there after") {
		t.Errorf("imaged.disk missing: %v", err)
	}
}
