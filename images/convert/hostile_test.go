package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Hand-made images that qemu-img would never write: each is one field away from a valid image.

// handCluster is the cluster size of handQcow2's images.
const handCluster = 64 << 10

// handQcow2 lays out a qcow2 with 64 KiB clusters: the header in cluster 0, the L1 table in
// cluster 1, the refcount table in cluster 2, one L2 table holding l2 in cluster 3, and payload
// from cluster 4 (offset 4*handCluster) on. incompat are v3's incompatible feature bits; with
// the compression type bit the compression type is zstd.
func handQcow2(version uint32, size uint64, incompat uint64, l2 []uint64, payload []byte) []byte {
	return handQcow2Bits(16, version, size, incompat, l2, payload)
}

// handQcow2Bits is handQcow2 with clusters of 1<<bits bytes.
func handQcow2Bits(bits uint32, version uint32, size uint64, incompat uint64, l2 []uint64, payload []byte) []byte {
	cs := 1 << bits
	b := make([]byte, 4*cs+(len(payload)+cs-1)/cs*cs)
	be := binary.BigEndian
	copy(b, magicQcow2)
	be.PutUint32(b[4:], version)
	be.PutUint32(b[20:], bits) // cluster_bits
	be.PutUint64(b[24:], size)
	be.PutUint32(b[36:], 1)            // l1_size
	be.PutUint64(b[40:], uint64(1*cs)) // l1_table_offset
	be.PutUint64(b[48:], uint64(2*cs)) // refcount_table_offset
	be.PutUint32(b[56:], 1)            // refcount_table_clusters
	be.PutUint64(b[cs:], uint64(3*cs)) // L1[0]
	if version == 3 {
		be.PutUint64(b[72:], incompat)
		be.PutUint32(b[96:], 4)    // refcount_order
		be.PutUint32(b[100:], 112) // header_length
		if incompat&qcowCompressionTy != 0 {
			b[104] = 1 // zstd
		}
	}
	for i, e := range l2 {
		be.PutUint64(b[3*cs+8*i:], e)
	}
	copy(b[4*cs:], payload)
	return b
}

// readQcow2 opens b as a qcow2 and reads all of it.
func readQcow2(b []byte) ([]byte, error) {
	ra := bytes.NewReader(b)
	q, err := openQcow2(ra, int64(len(b)))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(newExtentReader(Qcow2, ra, q, q.size))
}

// TestQcow2ZstdWindow: the window a compressed cluster's zstd frame declares is input. A
// 320 KiB image whose one cluster asks for a 512 MiB window must be refused without allocating
// it (the decoder's defaults allocated it); so must one whose single-segment frame claims 1 GiB.
func TestQcow2ZstdWindow(t *testing.T) {
	// RFC 8878 §3.1.1: magic, Frame_Header_Descriptor, then one RLE block (Block_Type 1) of
	// 64 KiB of 0xab, which is all the cluster needs.
	rle := []byte{0, 0, 0, 0xab}
	binary.LittleEndian.PutUint32(rle, 1|1<<1|handCluster<<3) // Last_Block, RLE, Block_Size
	rle = append(rle[:3], 0xab)
	bigWindow := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 19 << 3}, rle...) // Window_Descriptor: 2^(10+19)
	bigFrame := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}, binary.LittleEndian.AppendUint64(nil, 1<<30)...)
	bigFrame = append(bigFrame, rle...) // Single_Segment, 8-byte Frame_Content_Size of 1 GiB
	enc, _ := zstd.NewWriter(nil)
	good := enc.EncodeAll(bytes.Repeat([]byte{0xab}, handCluster), nil)

	for _, c := range []struct {
		name  string
		frame []byte
		ok    bool
	}{{"valid frame", good, true}, {"512 MiB window", bigWindow, false}, {"1 GiB single segment", bigFrame, false}} {
		t.Run(c.name, func(t *testing.T) {
			// Compressed Clusters Descriptor (cluster_bits 16, x = 54): bit 62, sectors - 1 at
			// bits 54-61, host offset below.
			entry := uint64(1)<<62 | uint64((len(c.frame)+511)/512-1)<<54 | 4*handCluster
			img := handQcow2(3, handCluster, qcowCompressionTy, []uint64{entry}, c.frame)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, err := readQcow2(img)
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 32<<20 {
				t.Errorf("allocated %d MiB for a %d KiB image", d>>20, len(img)>>10)
			}
			if c.ok {
				if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0xab}, handCluster)) {
					t.Fatalf("err %v, %d bytes", err, len(got))
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestQcow2V2ZeroFlag: bit 0 of an L2 entry means "reads as zeros" in v3 only; in a v2 image it
// is corruption, as QEMU says, not data and not zeros.
func TestQcow2V2ZeroFlag(t *testing.T) {
	data := bytes.Repeat([]byte{0xcd}, handCluster)
	for _, c := range []struct {
		version uint32
		want    []byte
		err     error
	}{{3, make([]byte, handCluster), nil}, {2, nil, ErrCorrupt}} {
		got, err := readQcow2(handQcow2(c.version, handCluster, 0, []uint64{4*handCluster | 1}, data))
		if !errors.Is(err, c.err) || c.err == nil && !bytes.Equal(got, c.want) {
			t.Errorf("v%d: err %v, %d bytes (zeros: %v)", c.version, err, len(got), bytes.Count(got, []byte{0}) == len(got))
		}
	}
}

// TestVHDXSameSequence: of two valid headers with one sequence number neither is current
// (MS-VHDX 2.2.2.1), unless they are identical (Disk2VHD writes that; QEMU reads it). Picking
// the first would ignore a log that only the second names.
func TestVHDXSameSequence(t *testing.T) {
	needQemuImg(t)
	orig := fixtureBytes(t, "dynamic-1m.vhdx")
	h1, h2 := 64<<10, 128<<10
	seal := func(h []byte) {
		binary.LittleEndian.PutUint32(h[4:], 0)
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, crc32c))
	}
	identical := bytes.Clone(orig)
	copy(identical[h2:h2+4096], identical[h1:h1+4096])
	logInSecond := bytes.Clone(identical)
	copy(logInSecond[h2+48:h2+64], "not a clean shut")
	seal(logInSecond[h2 : h2+4096])

	if _, err := openVHDX(bytes.NewReader(identical), int64(len(identical))); err != nil {
		t.Errorf("identical headers: %v", err)
	}
	_, err := openVHDX(bytes.NewReader(logInSecond), int64(len(logInSecond)))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "sequence number") {
		t.Errorf("headers differing in LogGuid with one sequence number: err = %v, want ErrCorrupt", err)
	}
}

// handVHD builds a dynamic VHD: the footer copy, the dynamic header at 512, the BAT at 1536,
// then every block (sector bitmap of one sector, then blockSize bytes of fill), then the
// footer.
func handVHD(blockSize uint32, size uint64, blocks int, fill byte) []byte {
	be := binary.BigEndian
	foot := make([]byte, vhdFooterLen)
	copy(foot, magicVHD)
	be.PutUint32(foot[8:], 2)
	be.PutUint32(foot[12:], 0x00010000)
	be.PutUint64(foot[16:], 512)
	be.PutUint64(foot[40:], size)
	be.PutUint64(foot[48:], size)
	be.PutUint32(foot[60:], vhdDynamic)
	be.PutUint32(foot[64:], vhdChecksum(foot, 64))

	entries := int((size + uint64(blockSize) - 1) / uint64(blockSize))
	batLen := (4*entries + 511) / 512 * 512
	b := make([]byte, 1536+batLen)
	copy(b, foot)
	h := b[512:1536]
	copy(h, "cxsparse")
	be.PutUint64(h[8:], ^uint64(0))
	be.PutUint64(h[16:], 1536)
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[28:], uint32(entries))
	be.PutUint32(h[32:], blockSize)
	be.PutUint32(h[36:], vhdChecksum(h, 36))
	for i := range entries {
		sector := uint32(0xffff_ffff)
		if i < blocks {
			sector = uint32(len(b) / 512)
			b = append(b, bytes.Repeat([]byte{0xff}, 512)...) // the bitmap: every sector present
			b = append(b, bytes.Repeat([]byte{fill}, int(blockSize))...)
		}
		be.PutUint32(b[1536+4*i:], sector)
	}
	return append(b, foot...)
}

// TestVHDSmallBlocks: below 4 KiB a block's bitmap is one sector by the spec and none by QEMU's
// arithmetic; such a disk is refused, not read as one or the other. 4 KiB blocks read.
func TestVHDSmallBlocks(t *testing.T) {
	for _, c := range []struct {
		bs  uint32
		err error
	}{{2048, ErrUnsupported}, {4096, nil}} {
		img := handVHD(c.bs, 16<<10, 2, 0x5a)
		ra := bytes.NewReader(img)
		v, err := openVHD(ra, int64(len(img)))
		var got []byte
		if err == nil {
			got, err = io.ReadAll(newExtentReader(VHD, ra, v, v.size))
		}
		want := append(bytes.Repeat([]byte{0x5a}, 2*int(c.bs)), make([]byte, 16<<10-2*int(c.bs))...)
		if !errors.Is(err, c.err) || c.err == nil && !bytes.Equal(got, want) {
			t.Errorf("%d-byte blocks: err %v, read %d bytes (right: %v)", c.bs, err, len(got), bytes.Equal(got, want))
		}
	}
}

// TestVHDFooterCopy: a dynamic disk's footer copy at offset 0 (what QEMU reads) must describe
// the disk the footer at the end (what this reads) does; a copy that does not parse is ignored.
func TestVHDFooterCopy(t *testing.T) {
	img := handVHD(4096, 16<<10, 1, 0x5a)
	resized := bytes.Clone(img)
	end := resized[len(resized)-vhdFooterLen:]
	binary.BigEndian.PutUint64(end[48:], 12<<10)
	binary.BigEndian.PutUint32(end[64:], vhdChecksum(end, 64))
	damagedCopy := bytes.Clone(img)
	damagedCopy[50] ^= 1

	for _, c := range []struct {
		name string
		img  []byte
		err  error
	}{{"consistent", img, nil}, {"sizes differ", resized, ErrCorrupt}, {"copy damaged", damagedCopy, nil}} {
		_, err := openVHD(bytes.NewReader(c.img), int64(len(c.img)))
		if !errors.Is(err, c.err) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
		}
	}
}

// vhdxRegion finds a region of a VHDX in its region table at 192 KiB.
func vhdxRegion(t *testing.T, b []byte, id [16]byte) (offset, length int64) {
	t.Helper()
	le := binary.LittleEndian
	rt := b[192<<10:]
	for i := range int(le.Uint32(rt[8:])) {
		e := rt[16+32*i:]
		if [16]byte(e[:16]) == id {
			return int64(le.Uint64(e[16:])), int64(le.Uint32(e[24:]))
		}
	}
	t.Fatalf("no region %x", id)
	return 0, 0
}

// TestVHDXBlockOverlaps: a payload block placed on the BAT, the metadata or the log would
// read the file's own tables as disk data; QEMU refuses the file at open, this at the block.
func TestVHDXBlockOverlaps(t *testing.T) {
	needQemuImg(t)
	orig := fixtureBytes(t, "dynamic-1m.vhdx")
	le := binary.LittleEndian
	batOff, _ := vhdxRegion(t, orig, regionBAT)
	metaOff, _ := vhdxRegion(t, orig, regionMetadata)
	logOff := int64(le.Uint64(orig[64<<10+72:])) // the log of header 1 (QEMU writes both alike)
	for name, target := range map[string]int64{"BAT": batOff, "metadata": metaOff, "log": logOff} {
		b := bytes.Clone(orig)
		le.PutUint64(b[batOff:], uint64(target)|payloadFullyPresent) // block 0: FileOffsetMB<<20 | state
		s, err := Open(t.Context(), writeTemp(t, "overlap.vhdx", b), Options{})
		if err == nil {
			_, err = io.Copy(io.Discard, s.Raw())
			s.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("block 0 on the %s at %d: err = %v, want ErrCorrupt", name, target, err)
		}
	}
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestQcow2UnalignedHost: a host cluster offset must be cluster-aligned in every L2 entry that
// has one (QEMU: "Cluster allocation offset ... unaligned"), zero clusters and extended L2
// entries too; read anyway, it would put the wrong bytes, or zeros, where QEMU fails.
func TestQcow2UnalignedHost(t *testing.T) {
	payload := bytes.Repeat([]byte{0xcd}, 2*handCluster)
	const unaligned = 4*handCluster + 512
	for _, c := range []struct {
		name     string
		incompat uint64
		l2       []uint64
	}{
		{"data", 0, []uint64{unaligned}},
		{"zero flag", 0, []uint64{unaligned | 1}},
		{"extended L2", qcowExtendedL2, []uint64{unaligned, 0xffff_ffff}}, // all 32 subclusters allocated
	} {
		_, err := readQcow2(handQcow2(3, handCluster, c.incompat, c.l2, payload))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unaligned") {
			t.Errorf("%s: err = %v, want ErrCorrupt naming the unaligned offset", c.name, err)
		}
	}
	// Aligned, the same entries read.
	got, err := readQcow2(handQcow2(3, handCluster, qcowExtendedL2, []uint64{4 * handCluster, 0xffff_ffff}, payload))
	if err != nil || !bytes.Equal(got, payload[:handCluster]) {
		t.Errorf("aligned extended L2 entry: err %v, equal %v", err, bytes.Equal(got, payload[:handCluster]))
	}
}

// TestVHDCurrentSize: the disk is Current Size bytes long, whatever the CHS geometry says
// (Virtual PC, and QEMU for images whose creator is "vpc " or "qemu", go by the geometry; for
// every image qemu-img writes the two agree). handVHD leaves the geometry 0.
func TestVHDCurrentSize(t *testing.T) {
	img := handVHD(4096, 12<<10+512, 1, 0x5a)
	v, err := openVHD(bytes.NewReader(img), int64(len(img)))
	if err != nil || v.size != 12<<10+512 {
		t.Fatalf("err %v, size %d, want the current size %d", err, v.size, 12<<10+512)
	}
}

// TestVHDXDuplicates: a region or a metadata item listed twice gives the file two meanings
// (two BATs, two sizes); MS-VHDX wants each unique, QEMU refuses the file, and so does this.
func TestVHDXDuplicates(t *testing.T) {
	needQemuImg(t)
	orig := fixtureBytes(t, "dynamic-1m.vhdx")
	le := binary.LittleEndian
	// A third region entry: the BAT again, placed on the metadata region.
	twoBATs := bytes.Clone(orig)
	rt := twoBATs[192<<10 : 256<<10]
	n := le.Uint32(rt[8:])
	e := rt[16+32*n:]
	metaOff, _ := vhdxRegion(t, orig, regionMetadata)
	copy(e, regionBAT[:])
	le.PutUint64(e[16:], uint64(metaOff))
	le.PutUint32(e[24:], 1<<20)
	le.PutUint32(e[28:], 1)
	le.PutUint32(rt[8:], n+1)
	le.PutUint32(rt[4:], 0)
	le.PutUint32(rt[4:], crc32.Checksum(rt, crc32c))
	// A second virtual disk size item (the metadata table has no checksum).
	twoSizes := bytes.Clone(orig)
	meta := twoSizes[metaOff:]
	count := le.Uint16(meta[10:])
	for j := range int(count) {
		if me := meta[32+32*j : 64+32*j]; [16]byte(me[:16]) == metaVirtualDiskSize {
			copy(meta[32+32*int(count):], me)
		}
	}
	le.PutUint16(meta[10:], count+1)

	for name, b := range map[string][]byte{"two BAT regions": twoBATs, "two disk sizes": twoSizes} {
		_, err := openVHDX(bytes.NewReader(b), int64(len(b)))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "twice") {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}
