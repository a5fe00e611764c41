package blobstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/images"
)

// The hashing pipeline: the caller's fill reads the image in chunks of whole blocks on one
// goroutine; the image digest (one SHA-256 over every byte, inherently sequential) runs on a
// second; the block hashes and zero flags on a third; and, for an import, writing the non-zero
// blocks on a fourth, after the third. On two cores, with a disk that keeps up (tmpfs), an
// import runs 1.5 to 2 times as fast as with a single images.Builder (BenchmarkImport: about
// 750-930 MB/s against 390-510 for a 1 GiB half-zero image), and it computes exactly the same
// manifest (TestPipelineMatchesBuilder).

const (
	chunkBlocks = 8 // 4 MiB chunks
	chunkSize   = chunkBlocks * images.BlockSize
	inFlight    = 6 // chunks allocated: 24 MiB per import or verify
)

type chunk struct {
	buf  []byte
	n    int
	off  int64
	zero [chunkBlocks]bool
	refs atomic.Int32
}

// blockFunc handles block i (its hash and zero flag), in order.
type blockFunc func(i int64, b []byte, h images.Hash, zero bool) error

// writeFunc handles a chunk's bytes at off, in order, with the zero flags of its blocks, on its
// own goroutine.
type writeFunc func(off int64, b []byte, zero []bool) error

// fillFunc fills buf with the image bytes at off: all of buf, or fewer with io.EOF at the end
// of the image. Any other error aborts.
type fillFunc func(buf []byte, off int64) (int, error)

// hashImage runs the pipeline and returns the image digest and size. write may be nil.
func hashImage(ctx context.Context, fill fillFunc, block blockFunc, write writeFunc, progress func(int64)) (images.Digest, int64, error) {
	g, ctx := errgroup.WithContext(ctx)
	free := make(chan *chunk, inFlight)
	for range inFlight {
		free <- &chunk{buf: make([]byte, chunkSize)}
	}
	toDigest := make(chan *chunk, inFlight)
	toBlocks := make(chan *chunk, inFlight)
	toWrite := make(chan *chunk, inFlight)
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c // never blocks: free holds every chunk
		}
	}
	send := func(q chan<- *chunk, c *chunk) error {
		select {
		case q <- c:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var size int64
	g.Go(func() error {
		defer close(toDigest)
		defer close(toBlocks)
		for {
			var c *chunk
			select {
			case c = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			n, err := fill(c.buf, size)
			if err != nil && err != io.EOF {
				return err
			}
			if n > 0 {
				if size+int64(n) > images.MaxImageSize {
					return fmt.Errorf("blobstore: the image is larger than %d bytes", int64(images.MaxImageSize))
				}
				c.n, c.off = n, size
				c.refs.Store(2)
				size += int64(n)
				if err := send(toDigest, c); err != nil {
					return err
				}
				if err := send(toBlocks, c); err != nil {
					return err
				}
				if progress != nil {
					progress(int64(n))
				}
			}
			if err == io.EOF || n < len(c.buf) {
				return ctx.Err()
			}
		}
	})
	digest := sha256.New()
	g.Go(func() error {
		for c := range toDigest {
			digest.Write(c.buf[:c.n])
			release(c)
		}
		return nil
	})
	g.Go(func() error {
		defer close(toWrite)
		for c := range toBlocks {
			for j, o := 0, 0; o < c.n; j, o = j+1, o+images.BlockSize {
				b := c.buf[o:min(o+images.BlockSize, c.n)]
				var h images.Hash
				c.zero[j] = images.IsZero(b)
				if c.zero[j] {
					h = images.ZeroHash(int64(len(b)))
				} else {
					h = sha256.Sum256(b)
				}
				if err := block((c.off+int64(o))/images.BlockSize, b, h, c.zero[j]); err != nil {
					release(c)
					return err
				}
			}
			if write == nil {
				release(c)
			} else if err := send(toWrite, c); err != nil {
				release(c)
				return err
			}
		}
		return ctx.Err()
	})
	g.Go(func() error {
		for c := range toWrite {
			err := write(c.off, c.buf[:c.n], c.zero[:(c.n+images.BlockSize-1)/images.BlockSize])
			release(c)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return images.Digest{}, 0, err
	}
	var d images.Digest
	digest.Sum(d[:0])
	return d, size, nil
}

// readFull is fill for a stream: unlike io.ReadFull it ends only on io.EOF itself, so a source
// that fails with io.ErrUnexpectedEOF (a truncated gzip) is an error, not a short image.
func readFull(r io.Reader) fillFunc {
	return func(buf []byte, _ int64) (int, error) {
		n := 0
		for n < len(buf) {
			k, err := r.Read(buf[n:])
			n += k
			if err == io.EOF {
				return n, io.EOF
			}
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
}
