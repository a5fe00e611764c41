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

// The hashing pipeline: the caller's fill reads the image in chunks of whole blocks; the image
// digest (one SHA-256 over every byte, inherently sequential) runs on one goroutine and the
// block hashes, zero flags and per-block work (writing, comparing) on another, so an import
// uses two cores where a single images.Builder uses one. The result is the manifest Builder
// would compute (TestPipelineMatchesBuilder).

const (
	chunkBlocks = 8 // 4 MiB chunks
	chunkSize   = chunkBlocks * images.BlockSize
	inFlight    = 4 // chunks allocated: 16 MiB per import or verify
)

type chunk struct {
	buf  []byte
	n    int
	off  int64
	refs atomic.Int32
}

// blockFunc handles block i (its bytes, hash and zero flag), in order.
type blockFunc func(i int64, b []byte, h images.Hash, zero bool) error

// fillFunc fills buf with the image bytes at off: all of buf, or fewer with io.EOF at the end
// of the image. Any other error aborts.
type fillFunc func(buf []byte, off int64) (int, error)

// hashImage runs the pipeline and returns the image digest and size.
func hashImage(ctx context.Context, fill fillFunc, block blockFunc, progress func(int64)) (images.Digest, int64, error) {
	g, ctx := errgroup.WithContext(ctx)
	free := make(chan *chunk, inFlight)
	for range inFlight {
		free <- &chunk{buf: make([]byte, chunkSize)}
	}
	toDigest := make(chan *chunk, inFlight)
	toBlocks := make(chan *chunk, inFlight)
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c // never blocks: free holds every chunk
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
				for _, q := range []chan *chunk{toDigest, toBlocks} {
					select {
					case q <- c:
					case <-ctx.Done():
						return ctx.Err()
					}
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
		for c := range toBlocks {
			for o := 0; o < c.n; o += images.BlockSize {
				b := c.buf[o:min(o+images.BlockSize, c.n)]
				var h images.Hash
				zero := images.IsZero(b)
				if zero {
					h = images.ZeroHash(int64(len(b)))
				} else {
					h = sha256.Sum256(b)
				}
				if err := block((c.off+int64(o))/images.BlockSize, b, h, zero); err != nil {
					release(c)
					return err
				}
			}
			release(c)
			if err := ctx.Err(); err != nil {
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
