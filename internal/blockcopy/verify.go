package blockcopy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/imaged/imaged/images"
)

// Verify reads every block of the target back and checks it against the manifest, hashing on
// workers goroutines (0 means one per core, as Options.Hashers). A mismatch is a *ChecksumError
// with OnTarget set; a target shorter than the image is ErrTargetTooSmall.
func Verify(ctx context.Context, target io.ReaderAt, m *images.Manifest, workers int) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("blockcopy: %w", err)
	}
	if workers <= 0 {
		workers = Options{}.mustDefaults().Hashers
	}
	_, err := verifyBlocks(ctx, target, m, workers, blockRange(0, len(m.Blocks)))
	return err
}

func (o Options) mustDefaults() Options {
	o, _ = o.withDefaults()
	return o
}

func blockRange(lo, hi int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := lo; i < hi; i++ {
			if !yield(i) {
				return
			}
		}
	}
}

// sampleBlocks yields the last block of [lo, hi) and about 1 % of the others (at least 16), one
// at a random place in each of as many equal strides.
func sampleBlocks(lo, hi int) iter.Seq[int] {
	return func(yield func(int) bool) {
		n := hi - lo
		k := min(n, max(16, n/100))
		step := n / k
		for i := range k {
			b := lo + i*step + rand.IntN(step)
			if b != hi-1 && !yield(b) {
				return
			}
		}
		yield(hi - 1)
	}
}

// readBack verifies blocks [lo, hi) of the synced target, all or a sample, from the device.
func (c *copier) readBack(ctx context.Context, lo, hi int) error {
	if c.d.f != nil {
		DropCache(c.d.f)
	}
	blocks := blockRange(lo, hi)
	if c.opt.ReadBack == ReadBackSample && hi-lo > 1 {
		blocks = sampleBlocks(lo, hi)
	}
	n, err := verifyBlocks(ctx, c.d.t, c.m, c.opt.Hashers, blocks)
	c.readBacks.Add(int64(n))
	return err
}

// verifyBlocks reads and hashes the given blocks on workers goroutines, and returns how many
// matched and the error of the lowest-numbered block that did not.
func verifyBlocks(ctx context.Context, ra io.ReaderAt, m *images.Manifest, workers int, blocks iter.Seq[int]) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan int, workers)
	go func() {
		defer close(ch)
		for b := range blocks {
			select {
			case ch <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		ok       atomic.Int64
		mu       sync.Mutex
		firstBad = -1
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(b int, err error) {
		mu.Lock()
		if firstBad < 0 || b < firstBad {
			firstBad, firstErr = b, err
		}
		mu.Unlock()
		cancel()
	}
	for range workers {
		wg.Go(func() {
			buf := alignedBuf(images.BlockSize)
			for b := range ch {
				p := buf[:m.Len(b)]
				if n, err := ra.ReadAt(p, m.Offset(b)); n < len(p) {
					if err == nil || errors.Is(err, io.EOF) {
						err = fmt.Errorf("%w: block %d: read %d of %d bytes at %d", ErrTargetTooSmall, b, n, len(p), m.Offset(b))
					} else {
						err = fmt.Errorf("blockcopy: read back block %d: %w", b, err)
					}
					fail(b, err)
					continue
				}
				if sum := images.Hash(sha256.Sum256(p)); sum != m.Blocks[b].SHA256 {
					fail(b, &ChecksumError{Block: int64(b), Want: m.Blocks[b].SHA256, Got: sum, OnTarget: true})
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return int(ok.Load()), firstErr
	}
	if err := ctx.Err(); err != nil {
		return int(ok.Load()), fmt.Errorf("blockcopy: verify: %w", err)
	}
	return int(ok.Load()), nil
}
