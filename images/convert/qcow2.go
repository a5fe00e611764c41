package convert

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/imaged/imaged/images"
)

// qcow2 reads QEMU's qcow2 format, versions 2 and 3, following docs/interop/qcow2.txt in QEMU's
// source (quoted on the lines below). Refused: encryption, backing files, external data files,
// images marked corrupt, unknown incompatible features.
type qcow2 struct {
	ra          io.ReaderAt
	fileSize    int64
	version     uint32
	clusterBits uint32
	clusterSize int64
	size        int64
	compression kind // deflate or zstdc
	extL2       bool // extended L2 entries: 32 subclusters per cluster
	l2Entries   int64
	l1          *table

	// iteration
	cluster int64  // next cluster index
	l2      []byte // the L2 table of l2Index, nil if unallocated
	l2buf   []byte
	l2Index int64 // L1 index whose L2 table is loaded, -1 if none
	sub     int   // extended L2: next subcluster of cluster
}

// Incompatible feature bits (header bytes 72-79).
const (
	qcowDirty         = 1 << 0 // "Dirty bit. If this bit is set then refcounts may be inconsistent"
	qcowCorrupt       = 1 << 1 // "Corrupt bit. If this bit is set then any data structure may be corrupt"
	qcowExternalData  = 1 << 2 // "External data file bit"
	qcowCompressionTy = 1 << 3 // "Compression type bit. If this bit is set, a non-default compression is used"
	qcowExtendedL2    = 1 << 4 // "Extended L2 Entries. If this bit is set then L2 table entries use an extended format"
)

func openQcow2(ra io.ReaderAt, fileSize int64) (*qcow2, error) {
	h := make([]byte, 112)
	if fileSize < 72 {
		return nil, fmt.Errorf("%w: qcow2: %d bytes is shorter than a header", ErrCorrupt, fileSize)
	}
	if n, err := ra.ReadAt(h[:min(int64(len(h)), fileSize)], 0); n < 72 {
		return nil, readErr(err, "qcow2 header")
	}
	be := binary.BigEndian
	q := &qcow2{ra: ra, fileSize: fileSize, l2Index: -1, compression: deflate}
	//  4 -  7:   version "Version number (valid values are 2 and 3)"
	q.version = be.Uint32(h[4:])
	if q.version != 2 && q.version != 3 {
		return nil, fmt.Errorf("%w: qcow2 version %d (this reads 2 and 3)", ErrUnsupported, q.version)
	}
	//  8 - 15:   backing_file_offset "Offset into the image file at which the backing file name
	//            is stored ... If the image doesn't have a backing file, this is 0."
	// 16 - 19:   backing_file_size "Length of the backing file name in bytes. Must not be longer
	//            than 1023 bytes."
	if off, n := be.Uint64(h[8:]), be.Uint32(h[16:]); off != 0 {
		name := ""
		if n <= 1023 && off < uint64(fileSize) {
			b := make([]byte, n)
			if k, _ := ra.ReadAt(b, int64(off)); k == len(b) {
				name = fmt.Sprintf(" %q", b)
			}
		}
		return nil, fmt.Errorf("%w: qcow2 with a backing file%s: flatten it first (qemu-img convert -O qcow2 without -B)", ErrUnsupported, name)
	}
	// 20 - 23:   cluster_bits "Number of bits that are used for addressing an offset within a
	//            cluster (1 << cluster_bits is the cluster size). Must not be less than 9 (i.e.
	//            512 byte clusters). Note: qemu as of today has an implementation limit of 2 MB
	//            as the maximum cluster size"
	q.clusterBits = be.Uint32(h[20:])
	if q.clusterBits < 9 || q.clusterBits > 21 {
		return nil, fmt.Errorf("%w: qcow2 cluster_bits %d (9 to 21)", ErrCorrupt, q.clusterBits)
	}
	q.clusterSize = 1 << q.clusterBits
	// 24 - 31:   size "Virtual disk size in bytes."
	size := be.Uint64(h[24:])
	if size == 0 || size > images.MaxImageSize {
		return nil, fmt.Errorf("%w: qcow2 virtual size %d (1 byte to 16 TiB)", ErrUnsupported, size)
	}
	q.size = int64(size)
	// 32 - 35:   crypt_method "0 for no encryption, 1 for AES encryption, 2 for LUKS encryption"
	if m := be.Uint32(h[32:]); m != 0 {
		return nil, fmt.Errorf("%w: encrypted qcow2 (crypt_method %d): decrypt it first", ErrUnsupported, m)
	}
	if q.version == 3 {
		// 100 - 103: header_length "Length of the header structure in bytes. For version 2
		//            images, the length is always assumed to be 72 bytes. For version 3 it's at
		//            least 104 bytes and must be a multiple of 8."
		hl := be.Uint32(h[100:])
		if fileSize < 104 || hl < 104 || hl%8 != 0 {
			return nil, fmt.Errorf("%w: qcow2 v3 header_length %d", ErrCorrupt, hl)
		}
		// 72 - 79:  incompatible_features
		inc := be.Uint64(h[72:])
		switch {
		case inc&qcowCorrupt != 0:
			return nil, fmt.Errorf("%w: qcow2 is marked corrupt (incompatible feature bit 1): repair it with qemu-img check -r all", ErrCorrupt)
		case inc&qcowExternalData != 0:
			return nil, fmt.Errorf("%w: qcow2 with an external data file (incompatible feature bit 2)", ErrUnsupported)
		case inc&^(qcowDirty|qcowCompressionTy|qcowExtendedL2) != 0:
			return nil, fmt.Errorf("%w: qcow2 incompatible features %#x (this reads bits 0, 3 and 4)", ErrUnsupported, inc)
		}
		// 104: compression_type "If the incompatible bit "Compression type" is set: the field
		//      must be present and non-zero (which means non-zlib compression type). Otherwise,
		//      this field must not be present or must be zero (which means zlib)."
		//      "0: zlib <https://www.zlib.net/>, 1: zstd <http://github.com/facebook/zstd>"
		if inc&qcowCompressionTy != 0 {
			if hl < 105 {
				return nil, fmt.Errorf("%w: qcow2 compression type bit set but the header has no compression_type field", ErrCorrupt)
			}
			switch h[104] {
			case 1:
				q.compression = zstdc
			default:
				return nil, fmt.Errorf("%w: qcow2 compression_type %d", ErrUnsupported, h[104])
			}
		}
		// "Extended L2 Entries ... Each L2 entry is 128 bits: the standard 64-bit entry and a
		//  64-bit subcluster allocation bitmap"; "the cluster is divided into 32 subclusters".
		// QEMU requires clusters of at least 16 KiB for it.
		if inc&qcowExtendedL2 != 0 {
			if q.clusterBits < 14 {
				return nil, fmt.Errorf("%w: qcow2 extended L2 entries with %d-byte clusters", ErrCorrupt, q.clusterSize)
			}
			q.extL2 = true
		}
	}
	q.l2Entries = q.clusterSize / 8
	if q.extL2 {
		q.l2Entries = q.clusterSize / 16
	}
	// 36 - 39:   l1_size "Number of entries in the active L1 table"
	// 40 - 47:   l1_table_offset "Offset into the image file at which the active L1 table
	//            starts. Must be aligned to a cluster boundary."
	l1Size, l1Off := int64(be.Uint32(h[36:])), be.Uint64(h[40:])
	need := (q.size + q.clusterSize*q.l2Entries - 1) / (q.clusterSize * q.l2Entries)
	if l1Size < need {
		return nil, fmt.Errorf("%w: qcow2 L1 table has %d entries, a %d-byte disk needs %d", ErrCorrupt, l1Size, q.size, need)
	}
	if l1Off == 0 || l1Off%uint64(q.clusterSize) != 0 || l1Off > uint64(fileSize) || need*8 > fileSize-int64(l1Off) {
		return nil, fmt.Errorf("%w: qcow2 L1 table at input offset %d (%d entries) is misaligned or past the end of the %d-byte input", ErrCorrupt, l1Off, need, fileSize)
	}
	q.l1 = newTable(ra, "qcow2 L1 table", int64(l1Off), need, 8)
	// 48 - 55:   refcount_table_offset "Offset into the image file at which the refcount table
	//            starts. Must be aligned to a cluster boundary."
	// 56 - 59:   refcount_table_clusters "Number of clusters that the refcount table occupies"
	// The refcount table is not needed to read the disk, but it lies in the file: if it does
	// not, the file was cut.
	rtOff, rtClusters := be.Uint64(h[48:]), int64(be.Uint32(h[56:]))
	if rtOff%uint64(q.clusterSize) != 0 || rtOff > uint64(fileSize) || rtClusters*q.clusterSize > fileSize-int64(rtOff) {
		return nil, fmt.Errorf("%w: qcow2 refcount table at input offset %d (%d clusters) is misaligned or past the end of the %d-byte input (truncated?)", ErrCorrupt, rtOff, rtClusters, fileSize)
	}
	return q, nil
}

func (q *qcow2) detail() string {
	c := "zlib"
	if q.compression == zstdc {
		c = "zstd"
	}
	d := fmt.Sprintf("v%d, %d KiB clusters, %s compression", q.version, q.clusterSize>>10, c)
	if q.extL2 {
		d += ", extended L2"
	}
	return d
}

func (q *qcow2) next() (extent, error) {
	voff := q.cluster * q.clusterSize
	if voff >= q.size {
		return extent{}, io.EOF
	}
	l1i := q.cluster / q.l2Entries
	if l1i != q.l2Index {
		if err := q.loadL2(l1i); err != nil {
			return extent{}, err
		}
	}
	if q.l2 == nil {
		// "If the offset is 0, the L2 table and all clusters described by this L2 table are
		//  unallocated." Without a backing file, unallocated reads as zeros.
		end := min((l1i+1)*q.l2Entries*q.clusterSize, q.size)
		q.cluster = (l1i + 1) * q.l2Entries
		return extent{kind: zero, n: end - voff}, nil
	}
	n := min(q.clusterSize, q.size-voff)
	esz := int64(8)
	if q.extL2 {
		esz = 16
	}
	j := (q.cluster % q.l2Entries) * esz
	entry := binary.BigEndian.Uint64(q.l2[j:])
	// L2 entry: "Bit 62: 0 for standard clusters, 1 for compressed clusters"
	if entry&(1<<62) != 0 {
		q.cluster++
		return q.compressed(entry, voff, n)
	}
	// Standard Cluster Descriptor: "Bit 0: If set to 1, the cluster reads as all zeros ... With
	// version 2 or with extended L2 entries, this is always 0." "Bits 9-55 of host cluster
	// offset. Must be aligned to a cluster boundary. If the offset is 0 and bit 63 is clear, the
	// cluster is unallocated."
	host := int64(entry & 0x00ff_ffff_ffff_fe00)
	if host%q.clusterSize != 0 {
		// QEMU checks this for every entry with a host offset, zero ones and extended L2
		// entries included ("Cluster allocation offset ... unaligned"): the L2 table is corrupt.
		return extent{}, fmt.Errorf("%w: qcow2 cluster for virtual offset %d at unaligned input offset %d", ErrCorrupt, voff, host)
	}
	if !q.extL2 {
		q.cluster++
		if entry&1 != 0 && q.version < 3 {
			// A v2 image cannot say "reads as zeros", so the entry is corrupt: QEMU fails the
			// read ("Zero cluster entry found in pre-v3 image") rather than guess.
			return extent{}, fmt.Errorf("%w: qcow2 v2 L2 entry for virtual offset %d has the v3 zero flag (bit 0)", ErrCorrupt, voff)
		}
		if entry&1 != 0 || host == 0 {
			return extent{kind: zero, n: n}, nil
		}
		return q.dataExtent(voff, host, n)
	}
	// Extended L2: "Bits 0-31: Subcluster allocation status (one bit per subcluster) 1: the
	// subcluster is allocated ... Bits 32-63: Subcluster reads as zeros (one bit per
	// subcluster) 1: the subcluster reads as zeros ... If both bits are set, the subcluster is
	// corrupted."
	bitmap := binary.BigEndian.Uint64(q.l2[j+8:])
	subSize := q.clusterSize / 32
	i := q.sub
	svoff := voff + int64(i)*subSize
	sn := min(subSize, q.size-svoff)
	q.sub++
	if q.sub == 32 || svoff+sn >= q.size {
		q.sub, q.cluster = 0, q.cluster+1
	}
	alloc, zeros := bitmap>>i&1 != 0, bitmap>>(32+i)&1 != 0
	switch {
	case alloc && zeros:
		return extent{}, fmt.Errorf("%w: qcow2 subcluster %d of virtual offset %d is both allocated and zero", ErrCorrupt, i, voff)
	case alloc && host == 0:
		return extent{}, fmt.Errorf("%w: qcow2 subcluster %d of virtual offset %d is allocated at offset 0", ErrCorrupt, i, voff)
	case alloc:
		return q.dataExtent(svoff, host+int64(i)*subSize, sn)
	}
	return extent{kind: zero, n: sn}, nil
}

func (q *qcow2) dataExtent(voff, host, n int64) (extent, error) {
	if host > q.fileSize || n > q.fileSize-host {
		return extent{}, fmt.Errorf("%w: qcow2 data for virtual offset %d at input offset %d (%d bytes) is past the end of the %d-byte input", ErrCorrupt, voff, host, n, q.fileSize)
	}
	return extent{kind: data, n: n, host: host}, nil
}

// compressed decodes a Compressed Clusters Descriptor (x = 62 - (cluster_bits - 8)):
// "Bit 0 - x-1: Host cluster offset. This is usually _not_ aligned to a cluster or sector
// boundary!" "x - 61: Number of additional 512-byte sectors used for the compressed data,
// beyond the sector containing the offset itself."
func (q *qcow2) compressed(entry uint64, voff, n int64) (extent, error) {
	x := 62 - (q.clusterBits - 8)
	host := int64(entry & (1<<x - 1))
	sectors := int64(entry>>x&(1<<(q.clusterBits-8)-1)) + 1
	// QEMU: compressed_size = nb_csectors * 512 - (host_offset & 511)
	clen := sectors*512 - host&511
	if host == 0 || host >= q.fileSize {
		return extent{}, fmt.Errorf("%w: qcow2 compressed cluster for virtual offset %d at input offset %d, past the end of the %d-byte input", ErrCorrupt, voff, host, q.fileSize)
	}
	return extent{kind: q.compression, n: n, host: host, clen: clen, csize: int(q.clusterSize)}, nil
}

func (q *qcow2) loadL2(l1i int64) error {
	e, err := q.l1.entry(l1i)
	if err != nil {
		return err
	}
	// L1 entry: "Bits 9-55 of the offset into the image file at which the L2 table starts.
	// Must be aligned to a cluster boundary. If the offset is 0, the L2 table and all clusters
	// described by this L2 table are unallocated."
	off := int64(binary.BigEndian.Uint64(e) & 0x00ff_ffff_ffff_fe00)
	q.l2Index = l1i
	if off == 0 {
		q.l2 = nil
		return nil
	}
	if off%q.clusterSize != 0 || off > q.fileSize || q.clusterSize > q.fileSize-off {
		return fmt.Errorf("%w: qcow2 L2 table %d at input offset %d is misaligned or past the end of the %d-byte input", ErrCorrupt, l1i, off, q.fileSize)
	}
	if q.l2buf == nil {
		q.l2buf = make([]byte, q.clusterSize)
	}
	q.l2 = q.l2buf
	if n, err := q.ra.ReadAt(q.l2, off); n < len(q.l2) {
		q.l2, q.l2Index = nil, -1
		return readErr(err, "qcow2 L2 table %d at input offset %d", l1i, off)
	}
	return nil
}
