package initrd

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/imaged/imaged/internal/atomicfile"
)

// compressorFor returns a constructor for the output compression. Both are deterministic: gzip
// writes no name and a zero mtime in its header, and zstd runs with one encoder goroutine.
// Debian's kernel unpacks both (CONFIG_RD_GZIP=y, CONFIG_RD_ZSTD=y).
func compressorFor(name string) (func(io.Writer) (io.WriteCloser, error), error) {
	switch name {
	case "", "gzip":
		return func(w io.Writer) (io.WriteCloser, error) {
			return gzip.NewWriterLevel(w, gzip.BestCompression)
		}, nil
	case "zstd":
		return func(w io.Writer) (io.WriteCloser, error) {
			// The kernel's unzstd accepts windows up to 128 MiB (ZSTD_WINDOWSIZE_MAX); this
			// level uses 8 MiB.
			return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
				zstd.WithEncoderConcurrency(1))
		}, nil
	}
	return nil, fmt.Errorf("initrd: unknown compression %q: want gzip or zstd", name)
}

// pendingFile is a fully written temporary file waiting to replace its destination
// (atomicfile: fsync, rename, fsync of the directory), with the size and SHA-256 of what it holds.
type pendingFile struct {
	f      *atomicfile.File
	size   int64
	sha256 string
}

// stageFile writes a temporary file next to dst with fill and records its size and digest. The
// caller must commit or discard it.
func stageFile(dst string, perm os.FileMode, fill func(io.Writer) error) (*pendingFile, error) {
	f, err := atomicfile.Create(dst, perm)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		f.Cleanup()
		return nil, err
	}
	return &pendingFile{f: f, size: cw.n, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

func (p *pendingFile) commit() error { return p.f.Commit() }

// discard removes the temporary file unless it was committed.
func (p *pendingFile) discard() { p.f.Cleanup() }
