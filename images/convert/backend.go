package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// backend is where a source's bytes come from.
type backend interface {
	name() string
	size() int64                    // -1: unknown
	readerAt() io.ReaderAt          // nil: no random access (a server without range requests)
	peek(n int) ([]byte, error)     // the first n bytes without consuming them (when readerAt is nil)
	stream() (io.ReadCloser, error) // the whole source from byte 0, once
	Close() error
}

type fileBackend struct {
	f    *os.File
	path string
	n    int64
}

func openFile(path string) (*fileBackend, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	// Seek works for block devices too (their stat size is 0).
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: size of %s: %w", path, err)
	}
	return &fileBackend{f: f, path: path, n: n}, nil
}

func (b *fileBackend) name() string             { return b.path }
func (b *fileBackend) size() int64              { return b.n }
func (b *fileBackend) readerAt() io.ReaderAt    { return b.f }
func (b *fileBackend) peek(int) ([]byte, error) { return nil, errors.New("peek on a file") }
func (b *fileBackend) Close() error             { return b.f.Close() }
func (b *fileBackend) stream() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.f, 0, b.n)), nil
}

// ranger fetches byte ranges of a remote object.
type ranger interface {
	// openRange returns the bytes [off, off+n) of the object; fewer is an error of the reader.
	openRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// rangeReaderAt is an io.ReaderAt over ranged requests, with a few read-ahead windows so that
// the small reads of table walks and the interleaved reads of metadata and data cost one request
// per window, not one per read.
type rangeReaderAt struct {
	ctx  context.Context
	r    ranger
	size int64

	mu   sync.Mutex
	wins [4]window // most recently used first
}

type window struct {
	off int64
	b   []byte
}

// readAhead is how much a small read fetches.
const readAhead = 1 << 20

func (ra *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("convert: negative offset")
	}
	if off >= ra.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > ra.size-off {
		p, eof = p[:ra.size-off], io.EOF
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	for i, w := range ra.wins {
		if w.b != nil && off >= w.off && off+int64(len(p)) <= w.off+int64(len(w.b)) {
			copy(ra.wins[1:i+1], ra.wins[:i])
			ra.wins[0] = w
			return copy(p, w.b[off-w.off:]), eof
		}
	}
	if len(p) >= readAhead {
		// Large reads (data) go straight into the caller's buffer.
		n, err := ra.fetch(p, off)
		if err == nil {
			err = eof
		}
		return n, err
	}
	n := min(readAhead, ra.size-off)
	last := ra.wins[len(ra.wins)-1]
	buf := last.b
	if int64(cap(buf)) < n {
		buf = make([]byte, readAhead)
	}
	buf = buf[:n]
	if k, err := ra.fetch(buf, off); err != nil {
		return 0, err
	} else if k < len(p) {
		return 0, io.ErrUnexpectedEOF
	}
	copy(ra.wins[1:], ra.wins[:len(ra.wins)-1])
	ra.wins[0] = window{off: off, b: buf}
	return copy(p, buf), eof
}

func (ra *rangeReaderAt) fetch(p []byte, off int64) (int, error) {
	body, err := ra.r.openRange(ra.ctx, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer body.Close()
	n, err := io.ReadFull(body, p)
	if err != nil {
		return n, fmt.Errorf("convert: read %d bytes at offset %d: %w", len(p), off, err)
	}
	return n, nil
}
