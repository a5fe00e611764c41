package convert

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readAll reads a source's raw bytes in odd-sized reads, as a consumer might.
func readAll(t *testing.T, s *Source) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	buf := make([]byte, 300<<10+17)
	for {
		n, err := s.Raw().Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// firstDiff names where two images differ, for a readable failure.
func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (block %d): got %#x, want %#x", i, i/(512<<10), a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// openFixture opens src, a path or a URL of fixture f, and reads it to the end, checking that
// it is f: its format and detail, then every raw byte. The Source closes when the test ends.
func openFixture(t *testing.T, src string, opt Options, f fixture) *Source {
	t.Helper()
	s, err := Open(t.Context(), src, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Format != f.format || !strings.Contains(s.Detail, f.detail) {
		t.Errorf("format %s (%q), want %s (%q)", s.Format, s.Detail, f.format, f.detail)
	}
	got, err := readAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.want) {
		t.Fatalf("raw bytes differ from the original: %s", firstDiff(got, f.want))
	}
	return s
}

func TestOpenEveryFormat(t *testing.T) {
	needQemuImg(t)
	_, list := fixtures(t)
	for _, f := range list {
		t.Run(f.name, func(t *testing.T) {
			s := openFixture(t, f.path, Options{}, f)
			if s.Size != -1 && s.Size != int64(len(f.want)) {
				t.Errorf("Size %d, want %d", s.Size, len(f.want))
			}
			done, total := s.Progress()
			if total >= 0 && done != total {
				t.Errorf("Progress() = %d of %d after the end", done, total)
			}
		})
	}
}

// TestRefused: what must fail, fails loudly with the reason, and never yields an image.
func TestRefused(t *testing.T) {
	needQemuImg(t)
	raw, _ := fixtures(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	read := func(name string) []byte { return fixtureBytes(t, name) }
	write := func(name string, b []byte) string {
		if err := os.WriteFile(path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path(name)
	}
	// A differencing VHD: the dynamic fixture with disk type 4 and its checksums fixed.
	diff := read("dynamic.vhd")
	for _, off := range []int{0, len(diff) - vhdFooterLen} {
		f := diff[off : off+vhdFooterLen]
		f[63] = vhdDifferencing
		sum := vhdChecksum(f, 64)
		f[64], f[65], f[66], f[67] = byte(sum>>24), byte(sum>>16), byte(sum>>8), byte(sum)
	}
	// A flipped bit in a VHD footer breaks its checksum.
	badSum := read("fixed.vhd")
	badSum[len(badSum)-vhdFooterLen+50] ^= 1
	// A differencing VHDX: HasParent in the file parameters of the dynamic fixture.
	vhdxDiff := read("dynamic-1m.vhdx")
	vhdxItem(t, vhdxDiff, metaFileParameters)[4] |= 2 // BlockSize (4 bytes), then the flags
	// A VHDX with a log to replay: a LogGuid in both headers, their checksums fixed.
	vhdxLog := read("dynamic-1m.vhdx")
	for _, off := range []int{64 << 10, 128 << 10} {
		h := vhdxLog[off : off+4096]
		copy(h[48:64], "not a clean shut")
		binary.LittleEndian.PutUint32(h[4:], 0)
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, crc32c))
	}
	// A fixed VHD inside gzip.
	vhdGz := gzipBytes(read("fixed.vhd"))

	if err := run(dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", fixtureNamed(t, "v3.qcow2").path, "-F", "qcow2", path("child.qcow2")); err != nil {
		t.Fatal(err)
	}
	// crypt_method 2 (LUKS) in the header: qemu-img's own LUKS images take seconds to make (key
	// derivation), and the header field is what the reader refuses on.
	luks := read("v3.qcow2")
	luks[35] = 2

	cases := []struct {
		name, path string
		want       error
		msg        string
	}{
		{"qcow2 backing file", path("child.qcow2"), ErrUnsupported, "backing file"},
		{"qcow2 encrypted", write("luks.qcow2", luks), ErrUnsupported, "encrypted"},
		{"vhd differencing", write("diff.vhd", diff), ErrUnsupported, "differencing"},
		{"vhdx differencing", write("diff.vhdx", vhdxDiff), ErrUnsupported, "differencing"},
		{"vhdx log", write("log.vhdx", vhdxLog), ErrUnsupported, "log to replay"},
		{"vhd footer checksum", write("badsum.vhd", badSum), ErrCorrupt, "checksum"},
		{"gzip of a qcow2", write("q.qcow2.gz", gzipBytes(read("v3.qcow2"))), ErrUnsupported, "qcow2 image, not raw"},
		{"gzip of a fixed vhd", write("f.vhd.gz", vhdGz), ErrUnsupported, "fixed VHD"},
		{"bzip2", write("disk.bz2", []byte("BZh91AY&SY\x00\x00")), ErrUnsupported, "bzip2"},
		{"xz of a vmdk", write("d.vmdk.xz", xzBytes([]byte("KDMV\x01\x00\x00\x00"))), ErrUnsupported, "VMDK"},
		{"missing file", path("nope"), ErrNotFound, "nope"},
		{"empty file", write("empty", nil), ErrCorrupt, "empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Open(t.Context(), c.path, Options{})
			if err == nil {
				var got []byte
				got, err = readAll(t, s)
				s.Close()
				if err == nil {
					t.Fatalf("read %d bytes (equal to the image: %v), want an error", len(got), bytes.Equal(got, raw))
				}
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q, want %v mentioning %q", err, c.want, c.msg)
			}
		})
	}
}

// TestTruncated: a cut input is an error that names an offset, never a short image. (A cut
// that removes only what follows the last byte of data — qcow2 and VHDX pad their last cluster
// or block — may still give the whole image: that is the only other outcome allowed.)
func TestTruncated(t *testing.T) {
	needQemuImg(t)
	_, list := fixtures(t)
	dir := t.TempDir()
	for _, f := range list {
		if f.format == Raw {
			continue // a cut raw file is a smaller raw image: nothing can tell
		}
		for _, frac := range []float64{0.3, 0.7, 0.999} {
			t.Run(fmt.Sprintf("%s/%.1f%%", f.name, frac*100), func(t *testing.T) {
				b, err := os.ReadFile(f.path)
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(dir, "cut-"+f.name) // the extension stays: a cut fixed VHD looks raw
				if err := os.WriteFile(p, b[:int(float64(len(b))*frac)], 0o644); err != nil {
					t.Fatal(err)
				}
				s, err := Open(t.Context(), p, Options{})
				if err == nil {
					var got []byte
					got, err = readAll(t, s)
					s.Close()
					if err == nil && frac < 0.99 || err == nil && !bytes.Equal(got, f.want) {
						t.Fatalf("read %d bytes of a cut %s without an error", len(got), f.name)
					}
					if err == nil {
						return // whole
					}
				}
				if !errors.Is(err, ErrCorrupt) || !strings.ContainsAny(err.Error(), "0123456789") {
					t.Fatalf("error %q, want ErrCorrupt naming an offset", err)
				}
			})
		}
	}
}

func TestCancel(t *testing.T) {
	_, list := fixtures(t)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := Open(ctx, list[0].path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	// A local file ignores ctx; the store's import checks it between chunks. Here: Open worked,
	// and reading still yields the image (no state was broken by the cancel).
	if _, err := readAll(t, s); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownScheme(t *testing.T) {
	if _, err := Open(t.Context(), "ftp://example.org/x", Options{}); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("err = %v", err)
	}
}

// TestVHDXChunkInterleave: past one chunk of payload blocks (2^23 sectors of 512 bytes: 128
// blocks of 32 MiB), the BAT interleaves a sector bitmap entry; block 129 is entry 130. The
// disk is 4.5 GiB and sparse; qemu-io writes the patterns this checks.
func TestVHDXChunkInterleave(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "big.vhdx")
	if err := run(dir, "qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=32M,subformat=dynamic", p, "4608M"); err != nil {
		t.Fatal(err)
	}
	writes := map[int64]byte{100 << 20: 0x22, 129*32<<20 + 1234*4096: 0x11}
	for off, pat := range writes {
		if err := run(dir, "qemu-io", "-c", fmt.Sprintf("write -P %#x %d 4k", pat, off), p); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	v, err := openVHDX(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	// Walk the extents; read only the data ones (4.5 GiB of zeros would take seconds to check).
	var voff int64
	found := map[int64]bool{}
	for {
		e, err := v.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.kind == data {
			b := make([]byte, e.n)
			if _, err := f.ReadAt(b, e.host); err != nil {
				t.Fatal(err)
			}
			for i := int64(0); i < e.n; i += 4096 {
				want := writes[voff+i]
				if want != 0 {
					found[voff+i] = true
				}
				if bytes.Count(b[i:i+4096], []byte{want}) != 4096 {
					t.Fatalf("4 KiB at %d: want all %#x, got %#x…", voff+i, want, b[i:i+8])
				}
			}
		}
		voff += e.n
	}
	if voff != 4608<<20 || len(found) != len(writes) {
		t.Fatalf("extents cover %d bytes (want 4.5 GiB) and hold %d of the %d patterns", voff, len(found), len(writes))
	}
}

// TestZstdSkippableFrame: pzstd starts its output with a skippable frame (RFC 8878 §3.1.2).
func TestZstdSkippableFrame(t *testing.T) {
	raw := testImage(1<<20+512, 5)
	b := []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}
	p := filepath.Join(t.TempDir(), "disk.zst")
	if err := os.WriteFile(p, append(b, zstdBytes(raw)...), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := readAll(t, s)
	if err != nil || s.Format != Zstd || !bytes.Equal(got, raw) {
		t.Fatalf("format %s, err %v, equal %v", s.Format, err, bytes.Equal(got, raw))
	}
}
