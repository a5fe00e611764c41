package initrd

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
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

// pendingFile is a fully written and synced temporary file waiting to be renamed over its
// destination (the temp + rename pattern of gokrazy's renameio).
type pendingFile struct {
	tmp, dst string
	size     int64
	sha256   string
	done     bool
}

// stageFile writes a temporary file next to dst with fill, fsyncs it and records its size and
// digest. The caller must commit or discard it.
func stageFile(dst string, perm os.FileMode, fill func(io.Writer) error) (*pendingFile, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return nil, err
	}
	p := &pendingFile{tmp: f.Name(), dst: dst}
	fail := func(err error) (*pendingFile, error) {
		f.Close()
		os.Remove(p.tmp)
		return nil, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	p.size, p.sha256 = cw.n, hex.EncodeToString(h.Sum(nil))
	return p, nil
}

func (p *pendingFile) commit() error {
	if err := os.Rename(p.tmp, p.dst); err != nil {
		return err
	}
	p.done = true
	// Make the rename itself durable.
	if d, err := os.Open(filepath.Dir(p.dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (p *pendingFile) discard() {
	if !p.done {
		os.Remove(p.tmp)
	}
}
