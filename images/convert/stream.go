package convert

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// decompressor opens the decompressing reader of a streamed format.
func decompressor(f Format, r io.Reader) (io.ReadCloser, error) {
	switch f {
	case Gzip:
		// Multistream (the default) reads concatenated members, as gzip -d does (RFC 1952 §2.2).
		return gzip.NewReader(r)
	case Zstd:
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case XZ:
		d, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(d), nil
	}
	return nil, fmt.Errorf("no decompressor for %s", f)
}

// streamReader reads a decompressed stream. It refuses a stream that wraps anything but raw
// bytes, and turns every decompression error (a truncated input gives io.ErrUnexpectedEOF)
// into an ErrCorrupt that names the input and output offsets.
type streamReader struct {
	format  Format
	r       io.Reader
	input   *atomic.Int64
	out     int64
	started bool
	guard   *tailGuard
}

func (s *streamReader) Read(p []byte) (int, error) {
	if !s.started {
		s.started = true
		br := bufio.NewReaderSize(s.r, headLen)
		head, err := br.Peek(headLen)
		if err != nil && err != io.EOF {
			return 0, s.fail(err)
		}
		if len(head) == 0 {
			return 0, fmt.Errorf("%w: the %s stream holds no bytes", ErrCorrupt, s.format)
		}
		if what := refused(head); what != "" {
			return 0, fmt.Errorf("%w: the %s stream holds %s, not raw bytes", ErrUnsupported, s.format, what)
		}
		if f := wrapped(head); f != "" {
			return 0, fmt.Errorf("%w: the %s stream holds a %s image, not raw bytes: decompress it and import that", ErrUnsupported, s.format, f)
		}
		s.guard = &tailGuard{r: br, what: string(s.format) + " stream"}
	}
	n, err := s.guard.Read(p)
	s.out += int64(n)
	if err != nil && err != io.EOF {
		return n, s.fail(err)
	}
	return n, err
}

func (s *streamReader) fail(err error) error {
	if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) {
		return err
	}
	return readErr(err, "%s stream at input byte %d (raw byte %d)", s.format, s.input.Load(), s.out)
}

// readErr wraps an I/O error with where it happened. Cancellation stays cancellation; anything
// else means the input is not whole, and wraps ErrCorrupt too.
func readErr(err error, format string, args ...any) error {
	where := fmt.Sprintf(format, args...)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("convert: %s: %w", where, err)
	}
	if err == nil || err == io.EOF { // a short read where bytes were due: the input is truncated
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, where, err)
}

// exactReader checks that a raw input of known size delivers exactly that many bytes.
type exactReader struct {
	r    io.Reader
	size int64 // -1: unknown
	n    int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	switch {
	case e.size >= 0 && e.n > e.size:
		return n, fmt.Errorf("%w: raw input grew past its size %d while being read", ErrCorrupt, e.size)
	case err == io.EOF && e.size >= 0 && e.n != e.size:
		return n, fmt.Errorf("%w: raw input ends at byte %d, its size is %d", ErrCorrupt, e.n, e.size)
	case err != nil && err != io.EOF:
		return n, readErr(err, "raw input at byte %d", e.n)
	}
	return n, err
}

// tailGuard passes a stream through, holding back its last 512 bytes until the end: if they are
// a fixed VHD's footer (a fixed VHD is raw bytes plus a footer) the stream is refused, since the
// footer is not part of the disk. It guards streams whose end could not be read first
// (compressed inputs, servers without range requests). It costs one memory copy.
type tailGuard struct {
	r    io.Reader
	what string
	// unranged: the stream is a source read whole because its server ignores range requests,
	// not a decompressed one; the fixed VHD is then the source itself.
	unranged   bool
	buf        []byte // pending bytes are buf[start:end]
	start, end int
	n          int64 // bytes handed on
	eof        bool
}

func (g *tailGuard) Read(p []byte) (int, error) {
	if g.buf == nil {
		g.buf = make([]byte, 256<<10)
	}
	for {
		avail := g.end - g.start
		if !g.eof {
			avail -= vhdFooterLen
		}
		if avail > 0 {
			n := copy(p, g.buf[g.start:g.start+avail])
			g.start += n
			g.n += int64(n)
			return n, nil
		}
		if g.eof {
			return 0, io.EOF
		}
		g.end = copy(g.buf, g.buf[g.start:g.end])
		g.start = 0
		n, err := g.r.Read(g.buf[g.end:])
		g.end += n
		switch {
		case err == io.EOF:
			g.eof = true
			if g.end >= vhdFooterLen {
				f, ferr := parseVHDFooter(g.buf[g.end-vhdFooterLen : g.end])
				if ferr == nil && f.diskType == vhdFixed && int64(f.currentSize) == g.n+int64(g.end-vhdFooterLen) {
					if g.unranged {
						// Told at the end, after the disk's bytes went by as a raw image's.
						return 0, fmt.Errorf("%w: %w: the %s is a fixed VHD, which is told from a raw image by its footer at the end: serve it from a server that answers range requests, or import a local copy", ErrUnsupported, ErrNoRanges, g.what)
					}
					return 0, fmt.Errorf("%w: the %s ends with a fixed VHD's footer: import the .vhd itself (it is read sparsely, it needs no compression)", ErrUnsupported, g.what)
				}
			}
		case err != nil:
			return 0, err
		}
	}
}
