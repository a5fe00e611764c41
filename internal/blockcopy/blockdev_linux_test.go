package blockcopy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches a loop device to a new file of size bytes filled with old data.
func loopDevice(t *testing.T, size int) *os.File {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup (CI runs as root)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	back := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(back, garbage(size), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", back).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0) // as the agent opens its disk
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// On a block device: the size comes from BLKGETSIZE64, zero blocks are zeroed by discard
// (fallocate on the device) or BLKZEROOUT, and writes go through O_DIRECT.
func TestBlockDevice(t *testing.T) {
	img, m := testImage(t, "DZZDDDDZDD", 0, 40)
	t.Run("too small", func(t *testing.T) {
		f := loopDevice(t, len(img)-bs)
		srv := newBlobServer(t, img)
		if _, err := Copy(ctxb, f, srv.source(t), m, Options{}); !errors.Is(err, ErrTargetTooSmall) {
			t.Fatalf("err = %v, want ErrTargetTooSmall", err)
		}
	})
	for _, zm := range []ZeroMode{ZeroDiscard, ZeroOut, ZeroWrite} {
		t.Run([]string{"", "discard", "zeroout", "write"}[zm], func(t *testing.T) {
			f := loopDevice(t, len(img)+bs)
			srv := newBlobServer(t, img)
			res, err := Copy(ctxb, f, srv.source(t), m, Options{Zero: zm, Direct: DirectOn, ReadBack: ReadBackFull})
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, f, img, m)
			if !res.Direct || res.BytesZeroed != 3*bs || res.BlocksReadBack != len(m.Blocks) {
				t.Errorf("%+v", res)
			}
			t.Logf("zero mode %d: zeroed by %s", zm, res.ZeroMethod)
		})
	}
}
