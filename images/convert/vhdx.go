package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"strings"

	"github.com/imaged/imaged/images"
)

// VHDX follows Microsoft's [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" (sections quoted
// below). "All multibyte values MUST be stored in little-endian format".

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// guid returns a GUID in the binary form the spec compares ("used in their binary form"): the
// first three fields little-endian, the last eight bytes as written.
func guid(s string) [16]byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("convert: bad GUID literal " + s)
	}
	var g [16]byte
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g
}

var (
	// 2.2.3.2 Known Regions
	regionBAT      = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
	regionMetadata = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	// 2.6.2 Known Metadata Items
	metaFileParameters    = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	metaVirtualDiskSize   = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	metaVirtualDiskID     = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
	metaLogicalSectorSize = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	metaPhysSectorSize    = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
	metaParentLocator     = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
)

const mib = 1 << 20

type vhdx struct {
	ra          io.ReaderAt
	fileSize    int64
	size        int64
	blockSize   int64
	chunkRatio  int64
	bat         *table
	block       int64
	sectorSize  int64
	totalBlocks int64
	// taken are the file's own structures, which no payload block may overlap: 2.2.3.2 "All
	// objects within the table must be non-overlapping, not only with respect to each other but
	// with respect to the log (defined in the headers) and the payload and sector bitmap blocks
	// (defined in the BAT)." QEMU's vhdx_check_bat_entries refuses such a file too. They are the
	// header section, the log, the BAT and the metadata region.
	taken []region
}

func (v *vhdx) detail() string {
	return fmt.Sprintf("%d MiB blocks, %d-byte sectors", v.blockSize>>20, v.sectorSize)
}

func openVHDX(ra io.ReaderAt, fileSize int64) (*vhdx, error) {
	v := &vhdx{ra: ra, fileSize: fileSize}
	// 2.2 "The header section is 1 MB in size".
	if fileSize < mib {
		return nil, fmt.Errorf("%w: VHDX: %d bytes is shorter than the 1 MiB header section", ErrCorrupt, fileSize)
	}
	if err := v.header(); err != nil {
		return nil, err
	}
	bat, meta, err := v.regions()
	if err != nil {
		return nil, err
	}
	if err := v.metadata(meta); err != nil {
		return nil, err
	}
	// 2.4 "The number of sectors that can be described in each sector bitmap block is 2^23, so
	// the number of bytes described by a single sector bitmap block is 2^23 times the logical
	// sector size ... The chunk ratio is the number of payload blocks in a chunk".
	v.chunkRatio = (1 << 23) * v.sectorSize / v.blockSize
	// 2.5 "For dynamic and fixed VHDX, the last BAT entry MUST locate the last payload block of
	// the virtual disk": entries = DataBlocksCount + Fl((DataBlocksCount - 1) / ChunkRatio).
	v.totalBlocks = (v.size + v.blockSize - 1) / v.blockSize
	entries := v.totalBlocks + (v.totalBlocks-1)/v.chunkRatio
	if entries*8 > bat.length {
		return nil, fmt.Errorf("%w: VHDX BAT region of %d bytes, a %d-byte disk needs %d entries", ErrCorrupt, bat.length, v.size, entries)
	}
	v.bat = newTable(ra, "VHDX BAT", bat.offset, entries, 8)
	v.taken = append(v.taken, region{0, mib}, bat, meta)
	return v, nil
}

// header checks the file type identifier and picks the current header (2.2.2):
//
//	Signature 4 @0 "head", Checksum 4 @4, SequenceNumber 8 @8, FileWriteGuid 16 @16,
//	DataWriteGuid 16 @32, LogGuid 16 @48, LogVersion 2 @64, Version 2 @66, LogLength 4 @68,
//	LogOffset 8 @72.
func (v *vhdx) header() error {
	var best []byte
	var bestSeq uint64
	for _, off := range []int64{64 << 10, 128 << 10} {
		// "Each of the two headers is a 4-KB structure that is aligned to a 64-KB boundary. One
		// header is stored at offset 64 KB and the other at 128 KB."
		h := make([]byte, 4096)
		if n, err := v.ra.ReadAt(h, off); n < len(h) {
			return readErr(err, "VHDX header at input offset %d", off)
		}
		// "A header is valid if the Signature and Checksum fields both validate correctly."
		if string(h[:4]) != "head" || !crcOK(h, 4) {
			continue
		}
		// "A header is current if it is the only valid header or if it is valid and its
		// SequenceNumber field is greater than the other header's".
		seq := binary.LittleEndian.Uint64(h[8:])
		switch {
		case best == nil || seq > bestSeq:
			best, bestSeq = h, seq
		case seq == bestSeq && !bytes.Equal(h, best):
			// Two valid headers with one sequence number: neither is current, and picking one
			// could pick the one without the LogGuid. (Two identical headers are what Disk2VHD
			// writes; QEMU accepts those, and so does this.)
			return fmt.Errorf("%w: VHDX headers at 64 KiB and 128 KiB differ but have the same sequence number %d: no header is current", ErrCorrupt, seq)
		}
	}
	if best == nil {
		// "If there is no current header, then the VHDX file is corrupt."
		return fmt.Errorf("%w: VHDX has no valid header at 64 KiB or 128 KiB", ErrCorrupt)
	}
	// "Version: ... This field MUST be set to 1. If it is not, an implementation MUST NOT attempt
	// to process the file".
	if ver := binary.LittleEndian.Uint16(best[66:]); ver != 1 {
		return fmt.Errorf("%w: VHDX version %d", ErrUnsupported, ver)
	}
	// "LogGuid: ... If this field is zero, then the log is empty or has no valid entries and
	// MUST not be replayed." A non-empty log holds metadata updates not yet applied; replaying it
	// means writing the file, which an importer must not do.
	if !allZero(best[48:64]) {
		return fmt.Errorf("%w: VHDX has a log to replay (it was not closed cleanly): open and close it in Hyper-V, or qemu-img check -r all, then import", ErrUnsupported)
	}
	// LogLength 4 @68 and LogOffset 8 @72 place the log, which no payload block may overlap,
	// empty or not.
	if n, off := int64(binary.LittleEndian.Uint32(best[68:])), binary.LittleEndian.Uint64(best[72:]); n > 0 && off < uint64(v.fileSize) {
		v.taken = append(v.taken, region{int64(off), n})
	}
	return nil
}

type region struct{ offset, length int64 }

// regions reads the region table (2.2.3): header Signature 4 @0 "regi", Checksum 4 @4,
// EntryCount 4 @8, Reserved 4 @12; entries of 32 bytes: Guid 16, FileOffset 8, Length 4,
// Required 4.
func (v *vhdx) regions() (bat, meta region, err error) {
	var t []byte
	for _, off := range []int64{192 << 10, 256 << 10} {
		// "There are two copies of the region table, stored at file offset 192 KB and file
		// offset 256 KB." Each is 64 KiB, its checksum "A CRC-32C hash over the entire 64-KB
		// table".
		b := make([]byte, 64<<10)
		if n, err := v.ra.ReadAt(b, off); n < len(b) {
			return bat, meta, readErr(err, "VHDX region table at input offset %d", off)
		}
		if string(b[:4]) == "regi" && crcOK(b, 4) {
			t = b
			break
		}
	}
	if t == nil {
		return bat, meta, fmt.Errorf("%w: VHDX has no valid region table at 192 KiB or 256 KiB", ErrCorrupt)
	}
	le := binary.LittleEndian
	// "EntryCount: ... This MUST be less than or equal to 2,047."
	count := le.Uint32(t[8:])
	if count > 2047 {
		return bat, meta, fmt.Errorf("%w: VHDX region table has %d entries (at most 2047)", ErrCorrupt, count)
	}
	var haveBAT, haveMeta bool
	for i := range int(count) {
		e := t[16+32*i:]
		var id [16]byte
		copy(id[:], e)
		r := region{offset: int64(le.Uint64(e[16:])), length: int64(le.Uint32(e[24:]))}
		required := le.Uint32(e[28:])&1 != 0
		// "Guid ... MUST be unique within the table": two BATs make two disks (QEMU refuses).
		if id == regionBAT && haveBAT || id == regionMetadata && haveMeta {
			return bat, meta, fmt.Errorf("%w: VHDX region table lists region %x twice", ErrCorrupt, id)
		}
		switch id {
		case regionBAT:
			bat, haveBAT = r, true
		case regionMetadata:
			meta, haveMeta = r, true
		default:
			// "Implementations MUST fail to open a VHDX file that contains a region that is
			// marked as required but is not understood."
			if required {
				return bat, meta, fmt.Errorf("%w: VHDX has a required region %x this reader does not know", ErrUnsupported, id)
			}
			continue
		}
		// "FileOffset: ... MUST be a multiple of 1 MB and MUST be at least 1 MB." "Length: ...
		// MUST be a multiple of 1 MB."
		if r.offset < mib || r.offset%mib != 0 || r.length%mib != 0 || r.length == 0 || r.offset > v.fileSize || r.length > v.fileSize-r.offset {
			return bat, meta, fmt.Errorf("%w: VHDX region %x at input offset %d (%d bytes) is misaligned or past the end of the %d-byte input", ErrCorrupt, id, r.offset, r.length, v.fileSize)
		}
	}
	if !haveBAT || !haveMeta {
		return bat, meta, fmt.Errorf("%w: VHDX region table lacks the BAT or the metadata region", ErrCorrupt)
	}
	return bat, meta, nil
}

// metadata reads the metadata table (2.6.1): header Signature 8 "metadata", Reserved 2,
// EntryCount 2, Reserved2 20; entries of 32 bytes: ItemID 16, Offset 4, Length 4, flags 4
// (bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired), Reserved2 4.
func (v *vhdx) metadata(meta region) error {
	t := make([]byte, 64<<10) // "a fixed-size, 64-KB, unsorted metadata table"
	if n, err := v.ra.ReadAt(t, meta.offset); n < len(t) {
		return readErr(err, "VHDX metadata table at input offset %d", meta.offset)
	}
	if string(t[:8]) != "metadata" {
		return fmt.Errorf("%w: VHDX metadata table at input offset %d has signature %q", ErrCorrupt, meta.offset, t[:8])
	}
	le := binary.LittleEndian
	count := le.Uint16(t[10:])
	if count > 2047 {
		return fmt.Errorf("%w: VHDX metadata table has %d entries (at most 2047)", ErrCorrupt, count)
	}
	item := func(e []byte, want int64) ([]byte, error) {
		// "Offset: ... MUST be at least 64 KB and is relative to the beginning of the metadata
		// region. The item ... MUST fall entirely within the metadata region". "Length ... MUST
		// be less than or equal to 1 MB."
		off, n := int64(le.Uint32(e[16:])), int64(le.Uint32(e[20:]))
		if n < want || off < 64<<10 || off+n > meta.length {
			return nil, fmt.Errorf("%w: VHDX metadata item %x: %d bytes at %d, outside the %d-byte region", ErrCorrupt, e[:16], n, off, meta.length)
		}
		b := make([]byte, want)
		if k, err := v.ra.ReadAt(b, meta.offset+off); k < len(b) {
			return nil, readErr(err, "VHDX metadata item at input offset %d", meta.offset+off)
		}
		return b, nil
	}
	var haveParams, haveSize, haveSector bool
	seen := map[[16]byte]bool{}
	for i := range int(count) {
		e := t[32+32*i : 64+32*i]
		var id [16]byte
		copy(id[:], e)
		// 2.6.1.2: "The ItemId and IsUser value pair for an entry MUST be unique within the
		// table." Two sizes or two file parameters make two disks (QEMU refuses).
		if seen[id] && (id == metaFileParameters || id == metaVirtualDiskSize || id == metaLogicalSectorSize) {
			return fmt.Errorf("%w: VHDX metadata table lists item %x twice", ErrCorrupt, id)
		}
		seen[id] = true
		switch id {
		case metaFileParameters:
			// 2.6.2.1: BlockSize 4, then bit 0 LeaveBlocksAllocated, bit 1 HasParent.
			b, err := item(e, 8)
			if err != nil {
				return err
			}
			v.blockSize = int64(le.Uint32(b))
			flags := le.Uint32(b[4:])
			// "HasParent: Specifies whether this file has a parent VHDX file. If set, the file
			// is a differencing file".
			if flags&2 != 0 {
				return fmt.Errorf("%w: differencing VHDX (it needs its parent): merge it first", ErrUnsupported)
			}
			haveParams = true
		case metaVirtualDiskSize:
			// 2.6.2.2: "VirtualDiskSize (8 bytes): Specifies the virtual disk size, in bytes."
			b, err := item(e, 8)
			if err != nil {
				return err
			}
			s := le.Uint64(b)
			if s == 0 || s > images.MaxImageSize {
				return fmt.Errorf("%w: VHDX virtual disk size %d (1 byte to 16 TiB)", ErrUnsupported, s)
			}
			v.size, haveSize = int64(s), true
		case metaLogicalSectorSize:
			// 2.6.2.4: "LogicalSectorSize ... MUST be set to 512 or 4096."
			b, err := item(e, 4)
			if err != nil {
				return err
			}
			v.sectorSize, haveSector = int64(le.Uint32(b)), true
		case metaParentLocator:
			return fmt.Errorf("%w: differencing VHDX (it has a parent locator): merge it first", ErrUnsupported)
		case metaVirtualDiskID, metaPhysSectorSize:
		default:
			// "IsRequired: ... If this field is set to True and the implementation does not
			// recognize this metadata item, the implementation MUST fail to load the file."
			if le.Uint32(e[24:])&4 != 0 {
				return fmt.Errorf("%w: VHDX has a required metadata item %x this reader does not know", ErrUnsupported, id)
			}
		}
	}
	if !haveParams || !haveSize || !haveSector {
		return fmt.Errorf("%w: VHDX metadata lacks file parameters, virtual disk size or logical sector size", ErrCorrupt)
	}
	// "BlockSize: ... MUST be at least 1 MB and not greater than 256 MB, and MUST be a power of 2."
	if bs := v.blockSize; bs < mib || bs > 256*mib || bs&(bs-1) != 0 {
		return fmt.Errorf("%w: VHDX block size %d", ErrCorrupt, bs)
	}
	if v.sectorSize != 512 && v.sectorSize != 4096 {
		return fmt.Errorf("%w: VHDX logical sector size %d", ErrCorrupt, v.sectorSize)
	}
	// 2.6.2.2: "This value MUST be a multiple of the LogicalSectorSize".
	if v.size%v.sectorSize != 0 {
		return fmt.Errorf("%w: VHDX virtual disk size %d is not a multiple of its %d-byte sectors", ErrCorrupt, v.size, v.sectorSize)
	}
	return nil
}

// Payload BAT entry states (2.5.1.1).
const (
	payloadNotPresent       = 0
	payloadUndefined        = 1
	payloadZero             = 2
	payloadUnmapped         = 3
	payloadUnmappedV095     = 5 // "unmapped" in the 0.95 draft; QEMU reads it as zeros too
	payloadFullyPresent     = 6
	payloadPartiallyPresent = 7
)

func (v *vhdx) next() (extent, error) {
	if v.block >= v.totalBlocks {
		return extent{}, io.EOF
	}
	i := v.block
	v.block++
	voff := i * v.blockSize
	n := min(v.blockSize, v.size-voff)
	// 2.5: "the sector bitmap block entry associated with a chunk follows the entries for the
	// payload blocks in that chunk": payload block i is BAT entry i + Fl(i / ChunkRatio).
	e, err := v.bat.entry(i + i/v.chunkRatio)
	if err != nil {
		return extent{}, err
	}
	// 2.5.1 BAT Entry: "State (3 bits)", "Reserved (17 bits)", "FileOffsetMB (44 bits)".
	entry := binary.LittleEndian.Uint64(e)
	switch state := entry & 7; state {
	case payloadNotPresent, payloadUndefined, payloadZero, payloadUnmapped, payloadUnmappedV095:
		// NOT_PRESENT and UNDEFINED: "For reads from blocks in this state, implement one of the
		// following behaviors: ... Return zero data." ZERO: "implementations MUST return zeros".
		// UNMAPPED: "Return zero data" is allowed. QEMU returns zeros for all of them.
		return extent{kind: zero, n: n}, nil
	case payloadFullyPresent:
		// "the block's contents are defined in the file at the location specified by the
		// FileOffsetMB field"; "The payload or sector bitmap block must reside after the header
		// section".
		host := int64(entry>>20) * mib
		if host < mib || host > v.fileSize || n > v.fileSize-host {
			return extent{}, fmt.Errorf("%w: VHDX payload block %d for virtual offset %d at input offset %d (%d bytes) is past the end of the %d-byte input", ErrCorrupt, i, voff, host, n, v.fileSize)
		}
		for _, r := range v.taken {
			if host < r.offset+r.length && r.offset < host+n {
				return extent{}, fmt.Errorf("%w: VHDX payload block %d at input offset %d (%d bytes) overlaps the file's own structures at input offset %d (%d bytes)", ErrCorrupt, i, host, n, r.offset, r.length)
			}
		}
		return extent{kind: data, n: n, host: host}, nil
	case payloadPartiallyPresent:
		// "This block state MUST NOT be present in a block entry for a fixed or dynamic VHDX file."
		return extent{}, fmt.Errorf("%w: VHDX payload block %d is partially present, which only a differencing disk may be", ErrCorrupt, i)
	default:
		return extent{}, fmt.Errorf("%w: VHDX payload block %d has reserved state %d", ErrCorrupt, i, state)
	}
}

// crcOK checks a CRC-32C over b with the 4-byte checksum field at off taken as zero.
func crcOK(b []byte, off int) bool {
	want := binary.LittleEndian.Uint32(b[off:])
	c := crc32.Update(0, crc32c, b[:off])
	c = crc32.Update(c, crc32c, []byte{0, 0, 0, 0})
	c = crc32.Update(c, crc32c, b[off+4:])
	return c == want
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }
