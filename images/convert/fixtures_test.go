package convert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// testImage is a small disk image with every kind of run a converter must get right: data,
// zero runs of whole 512 KiB manifest blocks (holes), of one 64 KiB qcow2 cluster, of a whole
// 2 MiB VHD block, unaligned ones, and a last manifest block that is partial. Every 512-byte
// sector is distinct (it starts with its own number), so a misplaced sector shows; the rest of
// each sector is one random pattern (compressible: xz in Go is slow on random bytes), except a
// fully random stretch near the start.
func testImage(size int, seed uint64) []byte {
	b := make([]byte, size)
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pattern := make([]byte, 512)
	for i := range pattern {
		pattern[i] = byte(rnd.Uint32())
	}
	for s := 0; s*512 < size; s++ {
		sec := b[s*512 : min(size, (s+1)*512)]
		copy(sec, pattern)
		binary.BigEndian.PutUint64(sec[:min(8, len(sec))], uint64(s)^seed<<32|1<<63)
	}
	for i := 1536 << 10; i < 1792<<10 && i < size; i++ {
		b[i] = byte(rnd.Uint32())
	}
	z := func(from, to int) { clear(b[min(from, size):min(to, size)]) }
	z(512<<10, 1536<<10)              // two manifest blocks
	z(2<<20+4096, 2<<20+4096+200<<10) // unaligned run
	z(3<<20+64<<10, 3<<20+128<<10)    // one qcow2 cluster
	z(4<<20, 6<<20)                   // VHD block 2
	return b
}

// imageSize is a multiple of 512 (qemu-img's sector) but not of 64 KiB or 512 KiB.
const imageSize = 6<<20 + 192<<10 + 512

type fixture struct {
	name   string
	format Format
	detail string // a part of Source.Detail
	path   string
	want   []byte // the raw bytes the fixture holds
}

var (
	fixOnce  sync.Once
	fixDir   string
	fixRaw   []byte
	fixList  []fixture
	fixError error
	fixSkip  string
)

// qemuCases are made with qemu-img convert -f raw -O <args> from the raw test image.
var qemuCases = []struct {
	name, detail string
	format       Format
	args         []string
}{
	{"v3.qcow2", "v3, 64 KiB clusters", Qcow2, []string{"qcow2"}},
	{"v2.qcow2", "v2", Qcow2, []string{"qcow2", "-o", "compat=0.10"}},
	{"4k-clusters.qcow2", "4 KiB clusters", Qcow2, []string{"qcow2", "-o", "cluster_size=4096"}},
	{"zlib.qcow2", "zlib", Qcow2, []string{"qcow2", "-c"}},
	{"zstd.qcow2", "zstd", Qcow2, []string{"qcow2", "-c", "-o", "compression_type=zstd"}},
	{"extended-l2.qcow2", "extended L2", Qcow2, []string{"qcow2", "-o", "extended_l2=on,cluster_size=128k"}},
	{"fixed.vhd", "fixed", VHD, []string{"vpc", "-o", "subformat=fixed,force_size=on"}},
	{"dynamic.vhd", "dynamic, 2048 KiB blocks", VHD, []string{"vpc", "-o", "subformat=dynamic,force_size=on"}},
	{"fixed.vhdx", "MiB blocks", VHDX, []string{"vhdx", "-o", "subformat=fixed"}},
	{"dynamic-1m.vhdx", "1 MiB blocks", VHDX, []string{"vhdx", "-o", "subformat=dynamic,block_size=1M"}},
	{"dynamic.vhdx", "MiB blocks", VHDX, []string{"vhdx"}},
}

// needQemuImg skips when qemu-img is missing, except in CI (CI set), where it fails.
func needQemuImg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-img is missing and CI is set: install qemu-utils (scripts/install-deps.sh)")
		}
		t.Skip("qemu-img not found: install qemu-utils to test qcow2, VHD and VHDX")
	}
}

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %q: %v: %s", name, args, err, out)
	}
	return nil
}

// fixtures returns the raw test image and every format made of it, built once per test binary.
func fixtures(t testing.TB) (raw []byte, list []fixture) {
	t.Helper()
	fixOnce.Do(func() {
		fixDir, fixError = os.MkdirTemp("", "convert-fixtures-")
		if fixError != nil {
			return
		}
		fixRaw = testImage(imageSize, 1)
		rawPath := filepath.Join(fixDir, "disk.raw")
		if fixError = os.WriteFile(rawPath, fixRaw, 0o644); fixError != nil {
			return
		}
		fixList = append(fixList, fixture{name: "raw", format: Raw, path: rawPath, want: fixRaw})
		for _, c := range []struct {
			name   string
			format Format
			enc    func([]byte) []byte
		}{{"raw.gz", Gzip, gzipBytes}, {"raw.zst", Zstd, zstdBytes}, {"raw.xz", XZ, xzBytes}} {
			p := filepath.Join(fixDir, "disk."+c.name)
			if fixError = os.WriteFile(p, c.enc(fixRaw), 0o644); fixError != nil {
				return
			}
			fixList = append(fixList, fixture{name: c.name, format: c.format, path: p, want: fixRaw})
		}
		if _, err := exec.LookPath("qemu-img"); err != nil {
			fixSkip = "qemu-img not found"
			return
		}
		for _, c := range qemuCases {
			p := filepath.Join(fixDir, c.name)
			args := append([]string{"convert", "-f", "raw", "-O"}, c.args...)
			if fixError = run(fixDir, "qemu-img", append(args, rawPath, p)...); fixError != nil {
				return
			}
			fixList = append(fixList, fixture{name: c.name, format: c.format, detail: c.detail, path: p, want: fixRaw})
		}
		// Zero clusters (v3 L2 bit 0), with and without a host cluster, which qemu-img convert
		// never writes: qemu-io makes them, and qemu-img's own raw conversion is the truth.
		z := filepath.Join(fixDir, "zero-clusters.qcow2")
		for _, cmd := range [][]string{
			{"qemu-img", "create", "-q", "-f", "qcow2", z, "4M"},
			{"qemu-io", "-c", "write -P 0xab 0 4M", "-c", "write -z 1M 1M", "-c", "write -z -u 3M 64k", "-c", "write -P 0x5a 3145728 512", z},
			{"qemu-img", "convert", "-f", "qcow2", "-O", "raw", z, z + ".raw"},
		} {
			if fixError = run(fixDir, cmd[0], cmd[1:]...); fixError != nil {
				return
			}
		}
		want, err := os.ReadFile(z + ".raw")
		if fixError = err; err != nil {
			return
		}
		fixList = append(fixList, fixture{name: "zero-clusters.qcow2", format: Qcow2, path: z, want: want})
	})
	if fixError != nil {
		t.Fatalf("making fixtures: %v", fixError)
	}
	return fixRaw, fixList
}

// fixtureNamed returns the fixture called name.
func fixtureNamed(t testing.TB, name string) fixture {
	t.Helper()
	_, list := fixtures(t)
	for _, f := range list {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no fixture %q", name)
	return fixture{}
}

// fixtureBytes returns the file of the fixture called name: a copy, to change at will.
func fixtureBytes(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtureNamed(t, name).path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdBytes(b []byte) []byte {
	w, _ := zstd.NewWriter(nil)
	return w.EncodeAll(b, nil)
}

func xzBytes(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}
