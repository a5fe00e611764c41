// Package blockcopy streams an image onto a disk, verified block by block: it fetches the
// image's non-zero blocks over several ranged connections, checks each 512 KiB block against the
// manifest's SHA-256 before it is written (hashing on all cores), writes it at its offset, and
// proves the result (length, per-block digests, fsync, optional read-back).
//
// It is a protocol leaf that runs inside the agent on blades: it imports the standard library,
// golang.org/x/sys and the images package only (TestDeps guards this), and it knows nothing of
// jobs or stores. The caller adapts: a Target (an *os.File of the disk) and a Source
// (HTTPSource for imaged's GET /images/{digest}/blob).
package blockcopy

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/imaged/imaged/images"
)

// ZeroMode is how zero blocks are made zero on a target not known to be zero. Each mode falls
// back to the next when the target refuses it: discard, zero-out, write.
type ZeroMode int

const (
	ZeroAuto    ZeroMode = iota // the same as ZeroDiscard
	ZeroDiscard                 // fallocate PUNCH_HOLE: a hole in a file, an unmap that reads back zeros on a device
	ZeroOut                     // BLKZEROOUT on a device, FALLOC_FL_ZERO_RANGE on a file
	ZeroWrite                   // write zeros
)

// ReadBackMode is how much of the target is read back and hashed after it is synced.
type ReadBackMode int

const (
	ReadBackNone   ReadBackMode = iota
	ReadBackSample              // block 0, the last block and about 1 % of the others (at least 16)
	ReadBackFull                // every block
)

// DirectMode says whether aligned writes go through O_DIRECT.
type DirectMode int

const (
	// DirectAuto uses O_DIRECT when the target is an *os.File that accepts it, and falls back to
	// buffered writes if the filesystem refuses. On the reference machine O_DIRECT writes a file
	// 2-3× faster than the page cache plus fsync does (bench/blockcopy).
	DirectAuto DirectMode = iota
	DirectOff
	DirectOn // O_DIRECT or fail
)

// Options tune Copy. The zero value is a good default.
type Options struct {
	Workers   int   // concurrent range requests (connections); 0 means 4
	Hashers   int   // goroutines hashing blocks; 0 means GOMAXPROCS
	RangeSize int64 // most bytes per request: adjacent non-zero blocks are coalesced up to this (a multiple of images.BlockSize); 0 means 4 MiB

	// TargetZeroed says the target reads as zeros wherever the image is zero (a new file, a disk
	// just discarded): zero blocks are then skipped, not zeroed.
	TargetZeroed bool
	Zero         ZeroMode

	// Delta reads each block of the target first and fetches and writes only the blocks whose
	// SHA-256 differs from the manifest's: reimaging to the next version of an image moves only
	// what changed.
	Delta bool

	ReadBack ReadBackMode
	Direct   DirectMode

	Retries int // further attempts per block after a dropped range or a bad checksum; 0 means 5, negative means none
	// ChecksumRetries caps the attempts of a block whose bytes failed their checksum (a corrupt
	// blob does not heal, a dropped connection may): 0 means Retries.
	ChecksumRetries int
	Backoff         time.Duration // delay before a block's first retry, doubled for each next one up to 10 s; 0 means 250 ms

	// Progress, if set, is called with the running totals after each range is written, one call
	// at a time, from the copy's goroutines: it must return quickly.
	Progress func(Result)
}

func (o Options) withDefaults() (Options, error) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Hashers <= 0 {
		o.Hashers = runtime.GOMAXPROCS(0)
	}
	if o.RangeSize == 0 {
		o.RangeSize = 4 << 20
	}
	if o.RangeSize < images.BlockSize || o.RangeSize%images.BlockSize != 0 {
		return o, fmt.Errorf("blockcopy: RangeSize %d is not a positive multiple of %d", o.RangeSize, images.BlockSize)
	}
	switch {
	case o.Retries == 0:
		o.Retries = 5
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.ChecksumRetries <= 0 || o.ChecksumRetries > o.Retries {
		o.ChecksumRetries = o.Retries
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	return o, nil
}

// Result is what a copy did. Bytes are image bytes; BytesFetched counts refetches too.
type Result struct {
	Size             int64 // of the image
	BytesFetched     int64 // received from the source, refetched blocks included
	BytesWritten     int64 // image data written, every byte verified first
	BytesZeroed      int64 // zero blocks zeroed on the target (ZeroMethod says how)
	BytesSkippedZero int64 // zero blocks left alone: the target was known to be zero
	BytesSkippedSame int64 // delta mode: blocks the target already held
	BlocksVerified   int   // blocks whose SHA-256 matched the manifest on arrival
	BlocksSame       int   // delta mode: blocks whose target copy matched the manifest
	BlocksReadBack   int   // blocks read back from the target after fsync and matched
	Requests         int   // ranges requested
	Retries          int   // blocks fetched again after a dropped range or a bad checksum
	Direct           bool  // aligned writes went through O_DIRECT
	ZeroMethod       string
	// HashTime is summed over all hashers: HashTime/Duration is the average number of cores
	// hashing. MaxHashing is the most blocks that were being hashed at once.
	HashTime   time.Duration
	MaxHashing int
	Duration   time.Duration
}

// Copy writes the image that m describes from src onto target, and returns only when every
// block is verified, written and synced.
//
// Zero blocks are never fetched. Block 0 (partition table, boot sector) is written last, after
// everything else is written and synced, so an interrupted or failed copy never leaves a disk
// that boots half an image; then the target is synced again. A range that breaks off or a block
// that fails its checksum is fetched again, that block onwards only, up to Options.Retries
// times per block with backoff.
//
// Errors match ErrChecksum (*ChecksumError names the block), ErrShortSource, ErrSourceChanged,
// *ServerError, ErrTargetTooSmall, or the context's error. The Result is filled in either case.
func Copy(ctx context.Context, target Target, src Source, m *images.Manifest, opt Options) (Result, error) {
	start := time.Now()
	if err := m.Validate(); err != nil {
		return Result{}, fmt.Errorf("blockcopy: %w", err)
	}
	opt, err := opt.withDefaults()
	if err != nil {
		return Result{}, err
	}
	d, err := openDev(target, m.Size, opt)
	if err != nil {
		return Result{Size: m.Size}, err
	}
	defer d.close()
	c := newCopier(d, src, m, opt)

	n := len(m.Blocks)
	err = c.run(ctx, 1, n)
	if err == nil {
		err = d.sync()
	}
	if err == nil && opt.ReadBack != ReadBackNone && n > 1 {
		err = c.readBack(ctx, 1, n)
	}
	// Block 0 last: whatever happened above, the disk's boot sector is still the old one (or
	// none), never the new image's over a half-written rest.
	if err == nil {
		err = c.run(ctx, 0, 1)
	}
	if err == nil {
		err = d.sync()
	}
	if err == nil && opt.ReadBack != ReadBackNone {
		err = c.readBack(ctx, 0, 1)
	}
	r := c.result()
	r.Duration = time.Since(start)
	return r, err
}
