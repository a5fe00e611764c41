package convert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

// maxFuzzAlloc bounds what opening and reading the first bytes of any input may allocate: the
// sizes of tables come from headers, and must never decide allocations.
const maxFuzzAlloc = 64 << 20

// Run one with an anchored name (-fuzz=FuzzVHD alone matches FuzzVHDX too):
//
//	go test -run=NONE -fuzz='^FuzzVHD$' -fuzztime=60s -fuzzminimizetime=5s ./images/convert/
//
// The go tool minimizes every new interesting input for up to a minute by default, which stalls
// a worker on inputs of many KiB (execs stay at 0/sec meanwhile): cap it as above. Crashers found
// go to testdata/fuzz and run with every go test.
//
// The seeds are small images, since the mutator spends its time where the bytes are: qemu-img
// makes them (with 512-byte qcow2 clusters, a few KiB each) when it is installed, hand-made
// hostile headers are added either way. VHD and VHDX protect their headers with checksums,
// which random mutation breaks at once; their targets take a fix flag that recomputes them, so
// that mutated headers get past the checksum.

// tinyImages converts a 64 KiB raw image to format with each set of qemu-img options.
func tinyImages(f *testing.F, format string, cases map[string][]string) [][]byte {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return nil
	}
	dir := f.TempDir()
	raw := filepath.Join(dir, "tiny.raw")
	b := make([]byte, 64<<10) // data, a hole, data
	copy(b, testImage(4<<10, 7))
	copy(b[40<<10:], testImage(2<<10, 8))
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for name, args := range cases {
		p := filepath.Join(dir, name)
		cmd := append(append([]string{"convert", "-f", "raw", "-O", format}, args...), raw, p)
		if err := run(dir, "qemu-img", cmd...); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// fuzzOpen opens data as the given container and reads up to 8 MiB of raw bytes: no panic, no
// unbounded allocation, and errors (not hangs) for garbage.
func fuzzOpen(t *testing.T, data []byte, open func(io.ReaderAt, int64) (mapper, int64, error), f Format) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ra := bytes.NewReader(data)
	m, size, err := open(ra, int64(len(data)))
	if err == nil {
		r := newExtentReader(f, ra, m, size)
		io.Copy(io.Discard, io.LimitReader(r, 8<<20))
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > maxFuzzAlloc {
		t.Fatalf("allocated %d bytes for a %d-byte input", d, len(data))
	}
}

func FuzzQcow2(f *testing.F) {
	for _, b := range tinyImages(f, "qcow2", map[string][]string{
		"v3":      {"-o", "cluster_size=512"},
		"v2":      {"-o", "compat=0.10,cluster_size=512"},
		"zlib":    {"-c", "-o", "cluster_size=512"},
		"zstd":    {"-c", "-o", "cluster_size=512,compression_type=zstd"},
		"v2-zlib": {"-c", "-o", "compat=0.10,cluster_size=512"},
		"extl2":   {"-o", "cluster_size=16k,extended_l2=on"},
	}) {
		f.Add(b)
	}
	// One 512-byte cluster, zstd-compressed in a frame with a Window_Descriptor (1 KiB): a
	// mutation of that byte asks for up to 3.75 TiB of window (RFC 8878 §3.1.1.1.2).
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 1 | 1<<1 | 512<<3&0xff, 512 << 3 >> 8, 0, 0xab}
	f.Add(handQcow2Bits(9, 3, 512, qcowCompressionTy, []uint64{1<<62 | 4*512}, frame))
	// qcow2 v3: 16 TiB, 512-byte clusters, an L1 table claimed at 4 G entries.
	q := make([]byte, 4096)
	copy(q, magicQcow2)
	be := binary.BigEndian
	be.PutUint32(q[4:], 3)
	be.PutUint32(q[20:], 9)
	be.PutUint64(q[24:], 16<<40)
	be.PutUint32(q[36:], 0xffffffff)
	be.PutUint64(q[40:], 512)
	be.PutUint32(q[100:], 104)
	f.Add(q)
	f.Fuzz(func(t *testing.T, data []byte) {
		detect(data, nil)
		fuzzOpen(t, data, func(ra io.ReaderAt, n int64) (mapper, int64, error) {
			q, err := openQcow2(ra, n)
			if err != nil {
				return nil, 0, err
			}
			return q, q.size, nil
		}, Qcow2)
	})
}

// fixVHD recomputes the checksums of the footers at both ends and of the dynamic header the
// footer at the end points to.
func fixVHD(b []byte) {
	be := binary.BigEndian
	for _, off := range []int{0, len(b) - vhdFooterLen} {
		if off >= 0 && len(b) >= vhdFooterLen {
			ft := b[off : off+vhdFooterLen]
			be.PutUint32(ft[64:], vhdChecksum(ft, 64))
		}
	}
	if len(b) >= vhdFooterLen {
		h := be.Uint64(b[len(b)-vhdFooterLen+16:])
		if h < uint64(len(b)) && uint64(len(b))-h >= 1024 {
			be.PutUint32(b[h+36:], vhdChecksum(b[h:h+1024], 36))
		}
	}
}

func FuzzVHD(f *testing.F) {
	// QEMU's dynamic VHDs have 2 MiB blocks, too big a seed: handVHD makes them with 4 KiB ones.
	seeds := tinyImages(f, "vpc", map[string][]string{"fixed": {"-o", "subformat=fixed,force_size=on"}})
	seeds = append(seeds, handVHD(4096, 16<<10, 2, 0x5a), handVHD(4096, 64<<10, 1, 0xa5))
	// VHD dynamic: footer at both ends, 1 TiB, a BAT claimed at 4 G entries.
	v := make([]byte, 4096)
	be := binary.BigEndian
	foot := v[len(v)-512:]
	copy(foot, magicVHD)
	be.PutUint32(foot[12:], 0x00010000)
	be.PutUint64(foot[16:], 512)
	be.PutUint64(foot[48:], 1<<40)
	be.PutUint32(foot[60:], vhdDynamic)
	copy(v, foot)
	copy(v[512:], "cxsparse")
	be.PutUint64(v[512+16:], 1536)
	be.PutUint32(v[512+28:], 0xffffffff)
	be.PutUint32(v[512+32:], 4096)
	fixVHD(v)
	seeds = append(seeds, v)
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix {
			data = bytes.Clone(data) // the fuzzer's input is not to be written
			fixVHD(data)
		}
		fuzzOpen(t, data, func(ra io.ReaderAt, n int64) (mapper, int64, error) {
			v, err := openVHD(ra, n)
			if err != nil {
				return nil, 0, err
			}
			return v, v.size, nil
		}, VHD)
	})
}

// A VHDX is at least a few MiB, nearly all of it zeros or payload, and its structures sit at
// MiB boundaries. FuzzVHDX's input is only the 4 KiB pages where structures are found (the
// header section's five 64 KiB slots, and the start and the 64 KiB mark of each MiB, where the
// log, BAT, metadata table and items, and blocks begin in QEMU's and hand-made layouts), laid
// out in a vhdxFuzzSize file of zeros.
const (
	vhdxPage     = 4096
	vhdxFuzzSize = 12 << 20
)

var vhdxPages = func() []int {
	p := []int{0, 64 << 10, 128 << 10, 192 << 10, 256 << 10}
	for m := 1; m < vhdxFuzzSize/mib; m++ {
		p = append(p, m*mib, m*mib+64<<10)
	}
	return p
}()

// vhdxFile lays the pages out; cut shortens the file (a truncated input).
func vhdxFile(pages []byte, cut uint32) []byte {
	b := make([]byte, vhdxFuzzSize)
	for i, off := range vhdxPages {
		if i*vhdxPage >= len(pages) {
			break
		}
		copy(b[off:off+vhdxPage], pages[i*vhdxPage:])
	}
	return b[:len(b)-int(cut%vhdxFuzzSize)]
}

// vhdxPagesOf is the inverse, for seeds.
func vhdxPagesOf(b []byte) []byte {
	var out []byte
	for _, off := range vhdxPages {
		p := make([]byte, vhdxPage)
		if off < len(b) {
			copy(p, b[off:])
		}
		out = append(out, p...)
	}
	return out
}

// fixVHDX recomputes the CRC-32C of both headers and both region tables.
func fixVHDX(b []byte) {
	for _, c := range []struct{ off, n int }{{64 << 10, 4096}, {128 << 10, 4096}, {192 << 10, 64 << 10}, {256 << 10, 64 << 10}} {
		if c.off+c.n > len(b) {
			continue
		}
		s := b[c.off : c.off+c.n]
		binary.LittleEndian.PutUint32(s[4:], 0)
		binary.LittleEndian.PutUint32(s[4:], crc32.Checksum(s, crc32c))
	}
}

func FuzzVHDX(f *testing.F) {
	var seeds [][]byte
	if _, err := exec.LookPath("qemu-img"); err == nil {
		dir := f.TempDir()
		for i, c := range [][]string{
			{"-o", "subformat=dynamic,block_size=1M,log_size=1M", "4M"},
			{"-o", "subformat=fixed,block_size=1M,log_size=1M", "2M"},
		} {
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := run(dir, "qemu-img", append([]string{"create", "-q", "-f", "vhdx", c[0], c[1], p}, c[2])...); err != nil {
				f.Fatal(err)
			}
			if err := run(dir, "qemu-io", "-f", "vhdx", "-c", "write -P 0x11 0 4k", "-c", "write -P 0x22 1M 4k", p); err != nil {
				f.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			seeds = append(seeds, vhdxPagesOf(b))
		}
	}
	seeds = append(seeds, append([]byte(nil), magicVHDX...))
	for _, s := range seeds {
		f.Add(s, false, uint32(0))
		f.Add(s, true, uint32(0))
	}
	f.Fuzz(func(t *testing.T, pages []byte, fix bool, cut uint32) {
		data := vhdxFile(pages, cut)
		if fix {
			fixVHDX(data)
		}
		fuzzOpen(t, data, func(ra io.ReaderAt, n int64) (mapper, int64, error) {
			v, err := openVHDX(ra, n)
			if err != nil {
				return nil, 0, err
			}
			return v, v.size, nil
		}, VHDX)
	})
}

// FuzzDetect: detection and the stream guards over arbitrary bytes.
func FuzzDetect(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add(magicGzip, []byte(nil))
	f.Add(magicQcow2, magicVHD)
	f.Fuzz(func(t *testing.T, head, tail []byte) {
		detect(head, tail)
		wrapped(head)
		named(string(head))
		parseVHDFooter(tail)
		in := slices.Concat(head, tail)
		g := &tailGuard{r: bytes.NewReader(in)}
		out, err := io.ReadAll(g)
		if err == nil && !bytes.Equal(out, in) {
			t.Fatalf("tailGuard changed the stream")
		}
	})
}
