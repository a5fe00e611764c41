package convert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/imaged/imaged/images"
)

// VHD follows Microsoft's "Virtual Hard Disk Image Format Specification" v1.0 (quoted below).
// All numbers are big-endian.

const vhdFooterLen = 512

// Disk Type: "2 Fixed hard disk, 3 Dynamic hard disk, 4 Differencing hard disk".
const (
	vhdFixed        = 2
	vhdDynamic      = 3
	vhdDifferencing = 4
)

type vhdFooter struct {
	dataOffset  uint64
	currentSize uint64
	diskType    uint32
}

// parseVHDFooter checks and decodes a Hard Disk Footer:
//
//	Cookie 8 @0, Features 4 @8, File Format Version 4 @12, Data Offset 8 @16, Time Stamp 4 @24,
//	Creator Application 4 @28, Creator Version 4 @32, Creator Host OS 4 @36, Original Size 8 @40,
//	Current Size 8 @48, Disk Geometry 4 @56, Disk Type 4 @60, Checksum 4 @64, Unique Id 16 @68,
//	Saved State 1 @84, Reserved 427 @85.
func parseVHDFooter(b []byte) (vhdFooter, error) {
	if len(b) != vhdFooterLen || !bytes.HasPrefix(b, magicVHD) {
		return vhdFooter{}, fmt.Errorf("%w: no VHD footer (cookie \"conectix\")", ErrCorrupt)
	}
	be := binary.BigEndian
	// "Checksum: ... a one's complement of the sum of all the bytes in the footer without the
	// checksum field."
	if want, got := be.Uint32(b[64:]), vhdChecksum(b, 64); want != got {
		return vhdFooter{}, fmt.Errorf("%w: VHD footer checksum %#x, computed %#x", ErrCorrupt, want, got)
	}
	// "File Format Version: ... For the current specification, this field must be initialized to
	// 0x00010000." The major version (high 16 bits) is what readers must understand.
	if v := be.Uint32(b[12:]); v>>16 != 1 {
		return vhdFooter{}, fmt.Errorf("%w: VHD file format version %#x", ErrUnsupported, v)
	}
	return vhdFooter{
		dataOffset:  be.Uint64(b[16:]),
		currentSize: be.Uint64(b[48:]),
		diskType:    be.Uint32(b[60:]),
	}, nil
}

// vhdChecksum is the one's complement of the byte sum of b, skipping the 4-byte field at skip.
func vhdChecksum(b []byte, skip int) uint32 {
	var sum uint32
	for i, c := range b {
		if i < skip || i >= skip+4 {
			sum += uint32(c)
		}
	}
	return ^sum
}

type vhd struct {
	size       int64
	dynamic    bool
	blockSize  int64
	bitmapSize int64
	fileSize   int64
	bat        *table
	block      int64 // next block (dynamic)
	done       bool  // fixed: the one extent was given
}

func (v *vhd) detail() string {
	if !v.dynamic {
		return "fixed"
	}
	return fmt.Sprintf("dynamic, %d KiB blocks", v.blockSize>>10)
}

func openVHD(ra io.ReaderAt, fileSize int64) (*vhd, error) {
	if fileSize < vhdFooterLen {
		return nil, fmt.Errorf("%w: VHD: %d bytes is shorter than a footer", ErrCorrupt, fileSize)
	}
	b := make([]byte, vhdFooterLen)
	if n, err := ra.ReadAt(b, fileSize-vhdFooterLen); n < len(b) {
		return nil, readErr(err, "VHD footer at input offset %d", fileSize-vhdFooterLen)
	}
	// "The footer is ... the last 512 bytes of the file" (dynamic disks also keep a copy at
	// offset 0, which is how a truncated dynamic disk is recognised here: its end is no footer).
	f, err := parseVHDFooter(b)
	if err != nil {
		return nil, fmt.Errorf("VHD footer at input offset %d (truncated input?): %w", fileSize-vhdFooterLen, err)
	}
	// Dynamic and differencing disks keep a copy of the footer at offset 0, which QEMU reads
	// instead of the one at the end. A footer there that disagrees with the end on what the disk
	// is makes the file mean two disks (QEMU would read the other one): refused. A copy that does
	// not parse is what the redundancy is for: the end's footer is used.
	if fileSize >= 2*vhdFooterLen {
		if n, err := ra.ReadAt(b, 0); n < len(b) {
			return nil, readErr(err, "VHD footer copy at input offset 0")
		}
		if c, err := parseVHDFooter(b); err == nil && (c.diskType != f.diskType || c.currentSize != f.currentSize || c.dataOffset != f.dataOffset) {
			return nil, fmt.Errorf("%w: VHD footer copy at offset 0 (type %d, %d bytes, data offset %d) disagrees with the footer at the end (type %d, %d bytes, data offset %d)",
				ErrCorrupt, c.diskType, c.currentSize, c.dataOffset, f.diskType, f.currentSize, f.dataOffset)
		}
	}
	if f.currentSize == 0 || f.currentSize > images.MaxImageSize {
		return nil, fmt.Errorf("%w: VHD current size %d (1 byte to 16 TiB)", ErrUnsupported, f.currentSize)
	}
	// "Current Size: This field stores the current size of the hard disk, in bytes." Hyper-V and
	// disk2vhd size disks by it; QEMU writes it equal to the CHS geometry's size unless told
	// force_size, so it is the size either way for the images imaged imports.
	v := &vhd{size: int64(f.currentSize), fileSize: fileSize}
	switch f.diskType {
	case vhdFixed:
		// A fixed disk is the disk's bytes followed by the footer.
		if v.size > fileSize-vhdFooterLen {
			return nil, fmt.Errorf("%w: fixed VHD of %d bytes in a %d-byte input (truncated?)", ErrCorrupt, v.size, fileSize)
		}
		return v, nil
	case vhdDynamic:
		v.dynamic = true
		return v, v.openDynamic(ra, f.dataOffset)
	case vhdDifferencing:
		return nil, fmt.Errorf("%w: differencing VHD (it needs its parent): merge it first", ErrUnsupported)
	}
	return nil, fmt.Errorf("%w: VHD disk type %d", ErrUnsupported, f.diskType)
}

// openDynamic reads the Dynamic Disk Header at off ("Data Offset: This field holds the absolute
// byte offset, from the beginning of the file, to the next structure"):
//
//	Cookie 8 @0 "cxsparse", Data Offset 8 @8, Table Offset 8 @16, Header Version 4 @24,
//	Max Table Entries 4 @28, Block Size 4 @32, Checksum 4 @36, Parent Unique ID 16 @40,
//	Parent Time Stamp 4 @56, Reserved 4 @60, Parent Unicode Name 512 @64,
//	Parent Locator Entries 8×24 @576, Reserved 256 @768.
func (v *vhd) openDynamic(ra io.ReaderAt, off uint64) error {
	const hdrLen = 1024
	if off > uint64(v.fileSize) || hdrLen > v.fileSize-int64(off) {
		return fmt.Errorf("%w: VHD dynamic header at input offset %d is past the end of the %d-byte input", ErrCorrupt, off, v.fileSize)
	}
	h := make([]byte, hdrLen)
	if n, err := ra.ReadAt(h, int64(off)); n < len(h) {
		return readErr(err, "VHD dynamic header at input offset %d", off)
	}
	be := binary.BigEndian
	if !bytes.HasPrefix(h, []byte("cxsparse")) {
		return fmt.Errorf("%w: VHD dynamic header at input offset %d has cookie %q, want \"cxsparse\"", ErrCorrupt, off, h[:8])
	}
	if want, got := be.Uint32(h[36:]), vhdChecksum(h, 36); want != got {
		return fmt.Errorf("%w: VHD dynamic header checksum %#x, computed %#x", ErrCorrupt, want, got)
	}
	// "Block Size: ... It is only the size of the data section of the block. The sectors per
	// block must always be a power of two. The default value is 0x00200000 (2 MB)."
	bs := int64(be.Uint32(h[32:]))
	if bs < 512 || bs > 256<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("%w: VHD block size %d (a power of two, 512 bytes to 256 MiB)", ErrCorrupt, bs)
	}
	// Below 4 KiB (8 sectors) the spec and QEMU disagree on where a block's data starts: QEMU's
	// bitmap_size = ((block_size / (8 * 512)) + 511) & ~511 is 0 there, the spec's one sector.
	// Virtual PC, Hyper-V and QEMU write 512 KiB or 2 MiB blocks; a 512-byte to 2 KiB one is
	// refused rather than read one way or the other.
	if bs < 4096 {
		return fmt.Errorf("%w: VHD block size %d (this reads 4 KiB and up): convert it with qemu-img convert -O qcow2", ErrUnsupported, bs)
	}
	v.blockSize = bs
	// The block bitmap: "The size of the bitmap is ... (sectors per block)/8, rounded up to the
	// next sector boundary". Data follows it.
	v.bitmapSize = (bs/512/8 + 511) / 512 * 512
	// "Max Table Entries: ... should be equal to the number of blocks in the disk".
	need := (v.size + bs - 1) / bs
	if entries := int64(be.Uint32(h[28:])); entries < need {
		return fmt.Errorf("%w: VHD BAT has %d entries, a %d-byte disk needs %d", ErrCorrupt, entries, v.size, need)
	}
	// "Table Offset: This field stores the absolute byte offset of the Block Allocation Table
	// (BAT) in the file." "Each entry is four bytes long."
	tOff := be.Uint64(h[16:])
	if tOff > uint64(v.fileSize) || need*4 > v.fileSize-int64(tOff) {
		return fmt.Errorf("%w: VHD BAT at input offset %d (%d entries) is past the end of the %d-byte input", ErrCorrupt, tOff, need, v.fileSize)
	}
	v.bat = newTable(ra, "VHD BAT", int64(tOff), need, 4)
	return nil
}

func (v *vhd) next() (extent, error) {
	if !v.dynamic {
		if v.done {
			return extent{}, io.EOF
		}
		v.done = true
		return extent{kind: data, n: v.size}, nil
	}
	voff := v.block * v.blockSize
	if voff >= v.size {
		return extent{}, io.EOF
	}
	e, err := v.bat.entry(v.block)
	if err != nil {
		return extent{}, err
	}
	v.block++
	n := min(v.blockSize, v.size-voff)
	// "Each entry in the table is the absolute sector offset to a block." "Unused table entries
	// are initialized to 0xFFFFFFFF." An unused block of a dynamic disk reads as zeros.
	sector := binary.BigEndian.Uint32(e)
	if sector == 0xffff_ffff {
		return extent{kind: zero, n: n}, nil
	}
	// The spec's sector bitmap marks which sectors of a block hold data; QEMU (block/vpc.c) and
	// Windows read a dynamic disk's allocated block whole regardless, and so does this, so that
	// the image is the disk those hosts see.
	host := int64(sector)*512 + v.bitmapSize
	if host+n > v.fileSize-vhdFooterLen {
		return extent{}, fmt.Errorf("%w: VHD block %d for virtual offset %d at input offset %d (%d bytes) runs past the footer of the %d-byte input", ErrCorrupt, v.block-1, voff, host, n, v.fileSize)
	}
	return extent{kind: data, n: n, host: host}, nil
}
