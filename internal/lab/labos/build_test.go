package labos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireBuildTools skips the test when mkfs.fat, syslinux or mtools is missing, and fails it
// under CI, which must install them (scripts/install-deps.sh).
func requireBuildTools(t *testing.T) {
	t.Helper()
	if _, err := findTools(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: CI must install them (scripts/install-deps.sh)", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// fakeBoot writes a pseudo-random "kernel" and "initramfs": Build copies them and does not look
// inside, so the layout can be tested without Debian's kernel package.
func fakeBoot(t *testing.T, dir string) (kernel, initramfs string) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	for _, f := range []struct {
		name string
		size int
	}{{"vmlinuz", 1<<20 + 123}, {"initrd.img", 2<<20 + 77}} {
		b := make([]byte, f.size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
}

func testURL() *url.URL { u, _ := url.Parse("http://10.99.0.1:8080"); return u }

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mtoolsRead reads one file from the image's partition with mtools.
func mtoolsRead(t *testing.T, img, name string) []byte {
	t.Helper()
	cmd := exec.Command("mtype", "-i", img+"@@1M", "::/"+name)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=/dev/null")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mtype %s: %v", name, err)
	}
	return out
}

func TestBuildLayout(t *testing.T) {
	requireBuildTools(t)
	dir := t.TempDir()
	kernel, initramfs := fakeBoot(t, dir)
	out := filepath.Join(dir, "os.img")
	res, err := Build(context.Background(), BuildOptions{Output: out, URL: testURL(), ReadyPort: 2345,
		ExtraArgs: []string{"imaged.debug=1"}, Kernel: kernel, Initrd: initramfs})
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if res.KernelSize != 1<<20+123 || res.InitrdSize != 2<<20+77 {
		t.Errorf("result: kernel %d bytes, initrd %d", res.KernelSize, res.InitrdSize)
	}
	if int64(len(img)) != DefaultSize || res.Size != DefaultSize || res.Path != out {
		t.Fatalf("image is %d bytes, result %+v", len(img), res)
	}
	if sum := sha256.Sum256(img); hex.EncodeToString(sum[:]) != res.SHA256 || res.Digest.Hex() != res.SHA256 {
		t.Errorf("result says %s / %s, the file's SHA-256 is %x", res.SHA256, res.Digest, sum)
	}
	// Sector 0: SYSLINUX's MBR code, our disk ID, one active FAT16 (LBA) partition from 1 MiB to
	// the end (mkfs.fat picks FAT16 for 63 MiB).
	code, _ := os.ReadFile(MBRCode)
	if !bytes.Equal(img[:len(code)], code) {
		t.Error("the MBR does not start with SYSLINUX's mbr.bin")
	}
	if img[510] != 0x55 || img[511] != 0xaa {
		t.Error("no MBR signature")
	}
	if id := binary.LittleEndian.Uint32(img[440:]); id != 0x494d4744 {
		t.Errorf("disk ID %#x", id)
	}
	e := img[446:462]
	start, count := binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
	if e[0] != 0x80 || e[4] != 0x0e || start != 2048 || count != (DefaultSize-1<<20)/512 || res.FileSystem != "FAT16" {
		t.Errorf("partition entry % x (start %d, %d sectors), file system %s", e, start, count, res.FileSystem)
	}
	if !bytes.Equal(img[462:510], make([]byte, 48)) {
		t.Error("the other partition entries are not empty")
	}
	// The partition: SYSLINUX's boot sector with 2048 hidden sectors, and the files.
	boot := img[1<<20:]
	if string(boot[3:11]) != "SYSLINUX" || binary.LittleEndian.Uint32(boot[28:]) != 2048 {
		t.Errorf("partition boot sector: OEM %q, hidden sectors %d", boot[3:11], binary.LittleEndian.Uint32(boot[28:]))
	}
	cfg := string(mtoolsRead(t, out, "syslinux.cfg"))
	wantAppend := "APPEND console=ttyS0 imaged.mode=os imaged.url=http://10.99.0.1:8080 imaged.image_size=67108864 imaged.ready_port=2345 imaged.debug=1\n"
	if !strings.Contains(cfg, wantAppend) || !strings.Contains(cfg, "LINUX /vmlinuz") || !strings.Contains(cfg, "INITRD /initrd.img") {
		t.Errorf("syslinux.cfg:\n%s\nwant %q", cfg, wantAppend)
	}
	if res.Cmdline+"\n" != strings.TrimPrefix(wantAppend, "APPEND ") {
		t.Errorf("result cmdline %q", res.Cmdline)
	}
	for name, src := range map[string]string{"vmlinuz": kernel, "initrd.img": initramfs} {
		want, _ := os.ReadFile(src)
		if got := mtoolsRead(t, out, name); !bytes.Equal(got, want) {
			t.Errorf("%s in the image differs from its source (%d bytes, want %d)", name, len(got), len(want))
		}
	}
	if len(mtoolsRead(t, out, "ldlinux.sys")) == 0 || len(mtoolsRead(t, out, "ldlinux.c32")) == 0 {
		t.Error("SYSLINUX is not installed")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".labos-*")); len(left) != 0 {
		t.Errorf("scratch files left behind: %v", left)
	}
}

// The same inputs give the same bytes, whatever the clock, the inputs' mtimes, the scratch
// directory or the caller's time zone; a different Epoch gives other bytes, which shows that the
// timestamps do land in the image and are fixed by it.
func TestBuildReproducible(t *testing.T) {
	requireBuildTools(t)
	dir := t.TempDir()
	kernel, initramfs := fakeBoot(t, dir)
	build := func(name string, epoch time.Time) string {
		t.Helper()
		out := filepath.Join(dir, name)
		res, err := Build(context.Background(), BuildOptions{Output: out, Size: 8 << 20, URL: testURL(),
			Kernel: kernel, Initrd: initramfs, Epoch: epoch, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if s := fileSum(t, out); s != res.SHA256 {
			t.Fatalf("%s: result %s, file %s", name, res.SHA256, s)
		}
		return res.SHA256
	}
	a := build("a.img", time.Time{})
	// FAT timestamps have a 2-second resolution: let the clock move past it, and change the
	// inputs' mtimes and the time zone.
	time.Sleep(2100 * time.Millisecond)
	now := time.Now()
	os.Chtimes(kernel, now, now)
	t.Setenv("TZ", "America/New_York")
	b := build("b.img", time.Time{})
	if a != b {
		t.Errorf("two builds of the same inputs differ: %s, %s", a, b)
	}
	if c := build("c.img", time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)); c == a {
		t.Error("a different Epoch gave the same bytes: the timestamps are not where Build thinks")
	}
}

func TestBuildOptionErrors(t *testing.T) {
	dir := t.TempDir()
	ok := BuildOptions{Output: filepath.Join(dir, "x.img"), URL: testURL(), Kernel: "k", Initrd: "i"}
	for _, tc := range []struct {
		name string
		mod  func(*BuildOptions)
		want string
	}{
		{"no output", func(o *BuildOptions) { o.Output = "" }, "Output is required"},
		{"no url", func(o *BuildOptions) { o.URL = nil }, "want http://host"},
		{"ftp url", func(o *BuildOptions) { o.URL, _ = url.Parse("ftp://x") }, "want http://host"},
		{"odd size", func(o *BuildOptions) { o.Size = 3<<20 + 512 }, "multiple of 1 MiB"},
		{"tiny", func(o *BuildOptions) { o.Size = 1 << 20 }, "at least 2 MiB"},
		{"port", func(o *BuildOptions) { o.ReadyPort = 70000 }, "ready port 70000"},
		{"both sources", func(o *BuildOptions) { o.Binary = "b" }, "not both"},
		{"no deb", func(o *BuildOptions) { o.Binary, o.Kernel, o.Initrd = "b", "", "" }, "needs KernelDeb"},
		{"no source", func(o *BuildOptions) { o.Kernel = "" }, "set Binary and KernelDeb, or Kernel and Initrd"},
		{"spaces", func(o *BuildOptions) { o.ExtraArgs = []string{"a b"} }, `kernel parameter "a b"`},
		{"epoch", func(o *BuildOptions) { o.Epoch = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC) }, "1980-2107"},
	} {
		o := ok
		tc.mod(&o)
		_, err := Build(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(ok.Output); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed build left %s", ok.Output)
	}
}

// Too small an image fails with a message that says so, and leaves nothing behind.
func TestBuildTooSmall(t *testing.T) {
	requireBuildTools(t)
	dir := t.TempDir()
	kernel, initramfs := fakeBoot(t, dir)
	out := filepath.Join(dir, "small.img")
	_, err := Build(context.Background(), BuildOptions{Output: out, Size: 3 << 20, URL: testURL(), Kernel: kernel, Initrd: initramfs})
	if err == nil || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("a 3 MiB image for 3 MiB of files: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed build left %s", out)
	}
}

func TestMBR(t *testing.T) {
	// fdisk's CHS for the usual first partition: sector 2048 is C/H/S 0/32/33.
	if got := chs(2048); got != [3]byte{32, 33, 0} {
		t.Errorf("chs(2048) = % x", got)
	}
	// Cylinder 300 (above 255: its two high bits go into the sector byte).
	if got := chs(300*255*63 + 254*63 + 62); got != [3]byte{254, 63 | 1<<6, 300 - 256} {
		t.Errorf("chs(c300) = % x", got)
	}
	if got := chs(1024 * 255 * 63); got != [3]byte{0xfe, 0xff, 0xff} {
		t.Errorf("chs beyond 1023 cylinders = % x", got)
	}
	s, err := makeMBR([]byte{0xfa, 0x31}, 0x01020304, 2048, 129024, 0x0e)
	if err != nil {
		t.Fatal(err)
	}
	// What sfdisk writes for "label: dos / start=2048, type=e, bootable" on a 64 MiB disk.
	want := "80 20 21 00 0e 28 20 08 00 08 00 00 00 f8 01 00"
	if got := strings.TrimSpace(hexBytes(s[446:462])); got != want {
		t.Errorf("entry %s, want %s", got, want)
	}
	if s[0] != 0xfa || s[440] != 4 || s[443] != 1 || s[510] != 0x55 || s[511] != 0xaa {
		t.Errorf("sector % x", s)
	}
	if _, err := makeMBR(make([]byte, 441), 0, 2048, 1, 0x0e); err == nil {
		t.Error("boot code longer than 440 bytes accepted")
	}
}

func hexBytes(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteString(hex.EncodeToString([]byte{c}) + " ")
	}
	return s.String()
}
