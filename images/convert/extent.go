package convert

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// kind is how an extent's virtual bytes are obtained.
type kind uint8

const (
	zero    kind = iota // reads as zeros; nothing is read from the input
	data                // stored as is at host
	deflate             // one qcow2 cluster, raw deflate (zlib compression type) at host, clen bytes
	zstdc               // one qcow2 cluster, zstd at host, clen bytes
)

// extent is a run of the virtual disk, in order.
type extent struct {
	kind kind
	n    int64 // virtual bytes
	host int64 // data, deflate, zstdc: offset in the input
	clen int64 // deflate, zstdc: compressed bytes at host (may run past the end of the input: it is
	// rounded up to a sector)
	csize int // deflate, zstdc: bytes the cluster decompresses to (at least n)
}

// mapper yields a container's extents in order; together they cover [0, size) exactly. It
// returns io.EOF after the last.
type mapper interface {
	next() (extent, error)
}

// extentReader produces a container's raw bytes from its extents: zeros without reading, data
// with ReadAt straight into the caller's buffer, compressed clusters through a decompressor.
type extentReader struct {
	format Format
	ra     io.ReaderAt
	m      mapper
	size   int64
	voff   int64  // virtual offset of the next byte
	cur    extent // what is left of the current extent
	peeked *extent

	cluster []byte // a decompressed cluster, served from cpos
	cpos    int
	cbuf    []byte // compressed bytes
	flate   io.ReadCloser
	zstd    *zstd.Decoder
}

func newExtentReader(f Format, ra io.ReaderAt, m mapper, size int64) *extentReader {
	return &extentReader{format: f, ra: ra, m: m, size: size}
}

// maxMerge bounds how much contiguous data one ReadAt asks for.
const maxMerge = 8 << 20

func (r *extentReader) advance() error {
	if r.peeked != nil {
		r.cur, r.peeked = *r.peeked, nil
	} else {
		e, err := r.m.next()
		if err != nil {
			return err
		}
		r.cur = e
	}
	if r.cur.n <= 0 || r.cur.n > r.size-r.voff {
		return fmt.Errorf("%w: %s: extent of %d bytes at virtual offset %d overruns the %d-byte disk", ErrCorrupt, r.format, r.cur.n, r.voff, r.size)
	}
	switch r.cur.kind {
	case deflate, zstdc:
		return r.decompress()
	}
	// Merge what follows when it continues this extent, so that one ReadAt (one ranged GET over
	// http) covers many clusters.
	for r.cur.n < maxMerge {
		e, err := r.m.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.kind != r.cur.kind || e.kind == data && e.host != r.cur.host+r.cur.n || e.n <= 0 || e.n > r.size-r.voff-r.cur.n {
			r.peeked = &e
			break
		}
		r.cur.n += e.n
	}
	return nil
}

func (r *extentReader) Read(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		if r.cur.n == 0 {
			if r.voff == r.size {
				break
			}
			if err := r.advance(); err == io.EOF {
				return done, fmt.Errorf("%w: %s: the allocation tables end at virtual offset %d of %d", ErrCorrupt, r.format, r.voff, r.size)
			} else if err != nil {
				return done, err
			}
		}
		k := int(min(int64(len(p)), r.cur.n))
		switch r.cur.kind {
		case zero:
			clear(p[:k])
		case data:
			n, err := r.ra.ReadAt(p[:k], r.cur.host)
			if n < k {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return done, readErr(err, "%s: data for virtual offset %d at input offset %d (%d bytes)", r.format, r.voff+int64(n), r.cur.host+int64(n), k-n)
			}
			r.cur.host += int64(k)
		case deflate, zstdc:
			copy(p[:k], r.cluster[r.cpos:])
			r.cpos += k
		}
		r.cur.n -= int64(k)
		r.voff += int64(k)
		done += k
		p = p[k:]
	}
	if done == 0 && r.voff == r.size {
		return 0, io.EOF
	}
	return done, nil
}

// maxZstdWindow is the largest zstd window a compressed qcow2 cluster may declare. Without a
// cap a frame header of a few bytes gets a 512 MiB buffer allocated (the decoder's default
// limit). A cluster inflates to at most 2 MiB, and QEMU compresses each one in a single call
// (qcow2_zstd_compress: ZSTD_compressStream2 with ZSTD_e_end), which sizes the window to the
// cluster; 8 MiB is also the largest window libzstd picks below its --ultra levels (windowLog
// 23), so no real image comes near it.
const maxZstdWindow = 8 << 20

// decompress reads and inflates the compressed cluster r.cur describes into r.cluster.
func (r *extentReader) decompress() error {
	e := r.cur
	if cap(r.cbuf) < int(e.clen) {
		r.cbuf = make([]byte, e.clen)
	}
	cb := r.cbuf[:e.clen]
	n, err := r.ra.ReadAt(cb, e.host)
	if n == 0 || err != nil && err != io.EOF {
		// Only the last cluster may end early: its length is rounded up to a sector.
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return readErr(err, "%s: compressed cluster for virtual offset %d at input offset %d", r.format, r.voff, e.host)
	}
	cb = cb[:n]
	if cap(r.cluster) < e.csize {
		r.cluster = make([]byte, e.csize)
	}
	r.cluster, r.cpos = r.cluster[:e.csize], 0
	var dec io.Reader
	switch e.kind {
	case deflate:
		// qcow2's "zlib" compression type is raw deflate without the zlib wrapper (QEMU's
		// qcow2_zlib_decompress: inflateInit2 with window bits -12).
		if r.flate == nil {
			r.flate = flate.NewReader(bytes.NewReader(cb))
		} else if err := r.flate.(flate.Resetter).Reset(bytes.NewReader(cb), nil); err != nil {
			return err
		}
		dec = r.flate
	case zstdc:
		if r.zstd == nil {
			// One goroutine: a cluster is small, and a concurrent decoder would read ahead into
			// the bytes after the frame (the compressed length is rounded up to a sector).
			// The decoder allocates the window a frame header asks for (RFC 8878 §3.1.1.1.2
			// Window_Descriptor, or Frame_Content_Size for a single-segment frame), so it is
			// capped: see maxZstdWindow.
			if r.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderMaxMemory(maxZstdWindow)); err != nil {
				return err
			}
		}
		if err := r.zstd.Reset(bytes.NewReader(cb)); err != nil {
			return fmt.Errorf("%w: %s: compressed cluster for virtual offset %d at input offset %d: %w", ErrCorrupt, r.format, r.voff, e.host, err)
		}
		dec = r.zstd
	}
	// QEMU requires a compressed cluster to inflate to a whole cluster (qcow2_*_decompress fail
	// unless the output buffer is full); bytes after the stream are ignored.
	if _, err := io.ReadFull(dec, r.cluster); err != nil {
		return fmt.Errorf("%w: %s: compressed cluster for virtual offset %d at input offset %d (%d bytes): %w", ErrCorrupt, r.format, r.voff, e.host, len(cb), err)
	}
	return nil
}

// table reads the fixed-size entries of an on-disk table in increasing order, 64 KiB at a
// time, so that the size a header claims for a table never decides how much is allocated.
type table struct {
	ra    io.ReaderAt
	what  string
	off   int64 // input offset of entry 0
	n     int64 // entries
	esize int64
	buf   []byte
	first int64 // index of the entry at buf[0]
	have  int64 // entries in buf
}

const tableWindow = 64 << 10

func newTable(ra io.ReaderAt, what string, off, n, esize int64) *table {
	return &table{ra: ra, what: what, off: off, n: n, esize: esize}
}

// entry returns entry i's bytes (valid until the next call).
func (t *table) entry(i int64) ([]byte, error) {
	if i < 0 || i >= t.n {
		return nil, fmt.Errorf("%w: %s entry %d out of range (%d entries)", ErrCorrupt, t.what, i, t.n)
	}
	if i < t.first || i >= t.first+t.have {
		per := tableWindow / t.esize
		t.first = i
		t.have = min(per, t.n-i)
		if t.buf == nil {
			t.buf = make([]byte, per*t.esize)
		}
		at := t.off + i*t.esize
		b := t.buf[:t.have*t.esize]
		if n, err := t.ra.ReadAt(b, at); n < len(b) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			t.have = 0
			return nil, readErr(err, "%s at input offset %d (%d bytes)", t.what, at, len(b))
		}
	}
	j := (i - t.first) * t.esize
	return t.buf[j : j+t.esize], nil
}
