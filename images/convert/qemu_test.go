package convert

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// matchSize is 5 MiB and a sector: a multiple of no cluster or block size.
const matchSize = 5<<20 + 512

// sparseWrites puts data at the start, unaligned in the middle and in the last sector of a
// disk of the given size (qemu-io commands).
func sparseWrites(size int64) []string {
	return []string{
		"write -P 0x11 0 4k",
		"write -P 0x22 2000000 3000",
		fmt.Sprintf("write -P 0x33 %d 512", size-512),
	}
}

// matchCase is an image qemu made: qemu-img create (or convert from sparse raw, with convert
// set), qemu-io writes, then an optional patch of the file's bytes.
type matchCase struct {
	name    string
	format  Format
	detail  string   // a part of Source.Detail: the image is what the case claims
	args    []string // -f <args> for create, -O <args> for convert
	size    int64    // matchSize if 0
	convert bool     // qemu-img convert from a raw holding sparseWrites, instead of create + qemu-io
	writes  []string // qemu-io commands after create; sparseWrites if nil and not empty
	empty   bool     // no writes at all
	patch   func(t *testing.T, b []byte)
}

var matchCases = []matchCase{
	{name: "empty-v3.qcow2", format: Qcow2, detail: "v3, 64 KiB", args: []string{"qcow2"}, empty: true},
	{name: "empty-v2.qcow2", format: Qcow2, detail: "v2", args: []string{"qcow2", "-o", "compat=0.10"}, empty: true},
	{name: "sparse-4k.qcow2", format: Qcow2, detail: "4 KiB clusters", args: []string{"qcow2", "-o", "cluster_size=4k"}},
	{name: "sparse-64k.qcow2", format: Qcow2, args: []string{"qcow2"}},
	{name: "sparse-2m.qcow2", format: Qcow2, detail: "2048 KiB clusters", args: []string{"qcow2", "-o", "cluster_size=2M"}},
	{name: "sparse-v2.qcow2", format: Qcow2, detail: "v2, 4 KiB", args: []string{"qcow2", "-o", "compat=0.10,cluster_size=4k"}},
	{name: "sparse-extended-l2.qcow2", format: Qcow2, detail: "128 KiB clusters, zlib compression, extended L2", args: []string{"qcow2", "-o", "extended_l2=on,cluster_size=128k"}},
	{name: "zeroed-extended-l2.qcow2", format: Qcow2, detail: "extended L2", args: []string{"qcow2", "-o", "extended_l2=on,cluster_size=64k"},
		writes: []string{"write -P 0x44 0 1M", "write -z 4k 8k", "write -z -u 64k 64k", "write -P 0x55 100k 2k"}},
	{name: "converted-2m.qcow2", format: Qcow2, detail: "2048 KiB clusters", args: []string{"qcow2", "-o", "cluster_size=2M"}, convert: true},
	{name: "compressed-4k.qcow2", format: Qcow2, detail: "4 KiB clusters, zlib", args: []string{"qcow2", "-c", "-o", "cluster_size=4k"}, convert: true},
	{name: "compressed-2m.qcow2", format: Qcow2, detail: "2048 KiB clusters, zlib", args: []string{"qcow2", "-c", "-o", "cluster_size=2M"}, convert: true},
	{name: "compressed-v2.qcow2", format: Qcow2, detail: "v2", args: []string{"qcow2", "-c", "-o", "compat=0.10"}, convert: true},
	{name: "compressed-zstd-2m.qcow2", format: Qcow2, detail: "2048 KiB clusters, zstd", args: []string{"qcow2", "-c", "-o", "compression_type=zstd,cluster_size=2M"}, convert: true},

	{name: "empty-dynamic.vhd", format: VHD, detail: "dynamic", args: []string{"vpc"}, empty: true},
	{name: "empty-fixed.vhd", format: VHD, detail: "fixed", args: []string{"vpc", "-o", "subformat=fixed"}, empty: true},
	// Without force_size QEMU rounds the size up to a CHS geometry and writes that as the
	// current size: qemu-img's raw output is that long, and so must this be.
	{name: "sparse-dynamic-chs.vhd", format: VHD, detail: "dynamic, 2048 KiB blocks", args: []string{"vpc"}},
	{name: "sparse-dynamic.vhd", format: VHD, detail: "dynamic", args: []string{"vpc", "-o", "force_size=on"}},
	{name: "sparse-fixed.vhd", format: VHD, detail: "fixed", args: []string{"vpc", "-o", "subformat=fixed,force_size=on"}},
	{name: "converted-dynamic-chs.vhd", format: VHD, detail: "dynamic", args: []string{"vpc"}, convert: true},

	{name: "empty-dynamic.vhdx", format: VHDX, detail: "512-byte sectors", args: []string{"vhdx"}, empty: true},
	{name: "empty-fixed.vhdx", format: VHDX, detail: "512-byte sectors", args: []string{"vhdx", "-o", "subformat=fixed"}, empty: true},
	{name: "sparse-1m.vhdx", format: VHDX, detail: "1 MiB blocks", args: []string{"vhdx", "-o", "block_size=1M"}},
	{name: "sparse-32m.vhdx", format: VHDX, detail: "32 MiB blocks", args: []string{"vhdx", "-o", "block_size=32M"}},
	{name: "sparse-fixed.vhdx", format: VHDX, detail: "1 MiB blocks", args: []string{"vhdx", "-o", "subformat=fixed,block_size=1M"}},
	{name: "zero-blocks.vhdx", format: VHDX, detail: "1 MiB blocks", args: []string{"vhdx", "-o", "block_size=1M"},
		writes: []string{"write -P 0x66 0 3M", "write -z 1M 1M", "write -P 0x77 4M 4k"}},
	{name: "converted-32m.vhdx", format: VHDX, detail: "32 MiB blocks", args: []string{"vhdx", "-o", "block_size=32M"}, convert: true},
	// QEMU writes and reads 512-byte logical sectors only. Below one chunk the BAT's layout does
	// not depend on the sector size, so patching the metadata item makes a valid 4Kn VHDX of the
	// same bytes.
	{name: "sparse-4kn.vhdx", format: VHDX, detail: "1 MiB blocks, 4096-byte sectors", args: []string{"vhdx", "-o", "block_size=1M"}, size: 5<<20 + 4096,
		patch: func(t *testing.T, b []byte) {
			binary.LittleEndian.PutUint32(vhdxItem(t, b, metaLogicalSectorSize), 4096)
		}},
}

// TestMatchesQemuImg: the raw bytes of images qemu made — empty, sparse, compressed, of every
// cluster and block size — have the SHA-256 and the size of qemu-img convert -O raw of them.
func TestMatchesQemuImg(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	for _, c := range matchCases {
		t.Run(c.name, func(t *testing.T) {
			size := c.size
			if size == 0 {
				size = matchSize
			}
			p := filepath.Join(dir, c.name)
			writes := c.writes
			if writes == nil && !c.empty {
				writes = sparseWrites(size)
			}
			if c.convert {
				rawPath := p + ".in"
				if err := run(dir, "qemu-img", "create", "-q", "-f", "raw", rawPath, fmt.Sprint(size)); err != nil {
					t.Fatal(err)
				}
				qemuIO(t, dir, "raw", rawPath, writes)
				if err := run(dir, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O"}, c.args...), rawPath, p)...); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := run(dir, "qemu-img", append(append([]string{"create", "-q", "-f"}, c.args...), p, fmt.Sprint(size))...); err != nil {
					t.Fatal(err)
				}
				qemuIO(t, dir, c.args[0], p, writes)
			}
			// The reference is taken before the patch, which must not change the disk's bytes
			// (QEMU 7.2 refuses the one it makes: 4096-byte logical sectors).
			want := qemuRawDigest(t, dir, c.args[0], p)
			if c.patch != nil {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				c.patch(t, b)
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			s, err := Open(t.Context(), p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Format != c.format || !strings.Contains(s.Detail, c.detail) {
				t.Errorf("format %s (%q), want %s (%q)", s.Format, s.Detail, c.format, c.detail)
			}
			h := sha256.New()
			n, err := io.Copy(h, s.Raw())
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%x", h.Sum(nil)); got != want.sum || n != want.size || s.Size != n {
				t.Fatalf("%d bytes (Size %d), SHA-256 %s; qemu-img convert -O raw: %d bytes, %s", n, s.Size, got, want.size, want.sum)
			}
		})
	}
}

func qemuIO(t *testing.T, dir, format, path string, cmds []string) {
	t.Helper()
	if len(cmds) == 0 {
		return
	}
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	if err := run(dir, "qemu-io", append(args, path)...); err != nil {
		t.Fatal(err)
	}
}

type digest struct {
	sum  string
	size int64
}

// qemuRawDigest is the SHA-256 and size of qemu-img convert -O raw of path, read with the
// given driver (a fixed VHD has no magic at its start: probed, it would be taken for raw).
func qemuRawDigest(t *testing.T, dir, driver, path string) digest {
	t.Helper()
	out := path + ".qemu.raw"
	if err := run(dir, "qemu-img", "convert", "-f", driver, "-O", "raw", path, out); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return digest{fmt.Sprintf("%x", h.Sum(nil)), n}
}

// vhdxItem returns the bytes of a VHDX's metadata item (in the metadata region, its table) to
// patch in place.
func vhdxItem(t *testing.T, b []byte, id [16]byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	off, _ := vhdxRegion(t, b, regionMetadata)
	meta := b[off:]
	for j := range int(le.Uint16(meta[10:])) {
		me := meta[32+32*j:]
		if [16]byte(me[:16]) == id {
			off, n := le.Uint32(me[16:]), le.Uint32(me[20:])
			return meta[off : off+n]
		}
	}
	t.Fatalf("no metadata item %x", id)
	return nil
}
