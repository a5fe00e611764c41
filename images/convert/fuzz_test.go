package convert

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
)

// maxFuzzAlloc bounds what opening and reading the first bytes of any input may allocate: the
// sizes of tables come from headers, and must never decide allocations.
const maxFuzzAlloc = 64 << 20

// fuzzSeeds adds small real images (qemu-img, when present) and hand-made hostile headers.
func fuzzSeeds(f *testing.F, names ...string) {
	if _, err := exec.LookPath("qemu-img"); err == nil {
		_, list := fixtures(f)
		for _, fx := range list {
			for _, n := range names {
				if fx.name == n {
					b, err := os.ReadFile(fx.path)
					if err != nil {
						f.Fatal(err)
					}
					f.Add(b)
				}
			}
		}
	}
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
	// VHD dynamic: footer at both ends, header claiming a huge BAT.
	v := make([]byte, 4096)
	foot := v[len(v)-512:]
	copy(foot, magicVHD)
	be.PutUint32(foot[12:], 0x00010000)
	be.PutUint64(foot[16:], 512)
	be.PutUint64(foot[48:], 16<<40)
	be.PutUint32(foot[60:], vhdDynamic)
	be.PutUint32(foot[64:], vhdChecksum(foot, 64))
	copy(v, foot)
	copy(v[512:], "cxsparse")
	be.PutUint64(v[512+16:], 1536)
	be.PutUint32(v[512+28:], 0xffffffff)
	be.PutUint32(v[512+32:], 512)
	be.PutUint32(v[512+36:], vhdChecksum(v[512:1536], 36))
	f.Add(v)
	f.Add(append([]byte(nil), magicVHDX...))
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
	fuzzSeeds(f, "v3.qcow2", "zlib.qcow2", "extended-l2.qcow2", "zero-clusters.qcow2")
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

func FuzzVHD(f *testing.F) {
	fuzzSeeds(f, "dynamic.vhd")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzOpen(t, data, func(ra io.ReaderAt, n int64) (mapper, int64, error) {
			v, err := openVHD(ra, n)
			if err != nil {
				return nil, 0, err
			}
			return v, v.size, nil
		}, VHD)
	})
}

func FuzzVHDX(f *testing.F) {
	fuzzSeeds(f, "dynamic-1m.vhdx")
	f.Fuzz(func(t *testing.T, data []byte) {
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
