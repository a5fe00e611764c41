package blockcopy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Target is where the image goes: an *os.File of a block device or of a regular file, or
// anything that reads and writes at offsets and syncs. For an *os.File, Copy finds the size
// (a regular file is extended to the image's length, a device too small is refused), zeroes
// with fallocate or BLKZEROOUT, and writes aligned ranges through an O_DIRECT descriptor of the
// same file (Options.Direct).
type Target interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Zeroer is implemented by targets other than *os.File that can make a range read as zeros
// more cheaply than by writing zeros. Copy uses it unless Options.Zero is ZeroWrite.
type Zeroer interface {
	ZeroRange(off, n int64) error
}

// Sizer is implemented by targets other than *os.File that have a fixed capacity, so that Copy
// can refuse a target too small before it writes anything.
type Sizer interface {
	Size() (int64, error)
}

// directAlign is the alignment of O_DIRECT offsets, lengths and buffers: 4096 covers the
// logical block size of every disk and the block size of the usual filesystems.
const directAlign = 4096

// dev is the target as Copy drives it.
type dev struct {
	t        Target
	f        *os.File // t, if it is an *os.File
	block    bool     // f is a block device
	direct   *os.File // an O_DIRECT descriptor of f's file, or nil
	mustDir  bool     // DirectOn: a refused O_DIRECT write is an error, not a fallback
	noDirect atomic.Bool

	zmode   ZeroMode
	zmu     sync.Mutex
	zmethod string // the method that worked last
	zfailed [zeroMethods]atomic.Bool
	zeros   []byte // aligned zeros for ZeroWrite, made on first use
	zsize   int
}

const (
	zmDiscard = iota
	zmZeroOut
	zmWrite
	zeroMethods
)

var zeroMethodNames = [zeroMethods]string{"discard", "zeroout", "write"}

func openDev(t Target, size int64, opt Options) (*dev, error) {
	d := &dev{t: t, zmode: opt.Zero, zsize: int(opt.RangeSize), mustDir: opt.Direct == DirectOn}
	f, ok := t.(*os.File)
	if !ok {
		if s, ok := t.(Sizer); ok {
			c, err := s.Size()
			if err != nil {
				return nil, fmt.Errorf("blockcopy: target size: %w", err)
			}
			if c < size {
				return nil, fmt.Errorf("%w: %d bytes, the image has %d", ErrTargetTooSmall, c, size)
			}
		}
		if opt.Direct == DirectOn {
			return nil, errors.New("blockcopy: O_DIRECT asked for a target that is not an *os.File")
		}
		return d, nil
	}
	d.f = f
	c, block, err := fileSize(f)
	if err != nil {
		return nil, fmt.Errorf("blockcopy: target %s: %w", f.Name(), err)
	}
	d.block = block
	switch {
	case c >= size:
	case block:
		return nil, fmt.Errorf("%w: %s has %d bytes, the image has %d", ErrTargetTooSmall, f.Name(), c, size)
	default:
		// A regular file grows to the image's length; the part it grows by reads as zeros.
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("blockcopy: extend %s to %d bytes: %w", f.Name(), size, err)
		}
	}
	if opt.Direct != DirectOff {
		d.direct, err = openDirect(f)
		if err != nil && opt.Direct == DirectOn {
			return nil, fmt.Errorf("blockcopy: O_DIRECT on %s: %w", f.Name(), err)
		}
	}
	return d, nil
}

func (d *dev) close() {
	if d.direct != nil {
		d.direct.Close()
	}
}

func (d *dev) usedDirect() bool { return d.direct != nil && !d.noDirect.Load() }

func (d *dev) sync() error {
	if err := d.t.Sync(); err != nil {
		return fmt.Errorf("blockcopy: fsync target: %w", err)
	}
	return nil
}

// writeAt writes p at off: its aligned part through O_DIRECT when that is on, the rest (the
// image's unaligned tail) through the target itself.
func (d *dev) writeAt(p []byte, off int64) error {
	if d.direct != nil && !d.noDirect.Load() && off%directAlign == 0 && isAligned(p) {
		if n := len(p) &^ (directAlign - 1); n > 0 {
			_, err := d.direct.WriteAt(p[:n], off)
			switch {
			case err == nil:
				p, off = p[n:], off+int64(n)
			case errors.Is(err, syscall.EINVAL) && !d.mustDir:
				// The filesystem refuses O_DIRECT (or wants a larger alignment): go on buffered.
				d.noDirect.Store(true)
			default:
				return fmt.Errorf("blockcopy: write %d bytes at %d: %w", n, off, err)
			}
		}
	}
	if len(p) == 0 {
		return nil
	}
	if _, err := d.t.WriteAt(p, off); err != nil {
		return fmt.Errorf("blockcopy: write %d bytes at %d: %w", len(p), off, err)
	}
	return nil
}

// zero makes [off, off+n) read as zeros: by discard (a hole in a file; an unmap that reads
// back as zeros on a device), by zero-out (FALLOC_FL_ZERO_RANGE, BLKZEROOUT), or by writing
// zeros, starting from Options.Zero and falling back along that order when a method is refused.
func (d *dev) zero(off, n int64) error {
	// Devices zero whole 512-byte sectors: the partial sector that ends an odd-sized image is
	// written as zeros.
	if tail := n % 512; tail != 0 {
		if err := d.writeZeros(off+n-tail, tail); err != nil {
			return err
		}
		if n -= tail; n == 0 {
			return nil
		}
	}
	first := zmDiscard
	switch d.zmode {
	case ZeroOut:
		first = zmZeroOut
	case ZeroWrite:
		first = zmWrite
	}
	for m := first; m < zmWrite; m++ {
		if d.zfailed[m].Load() {
			continue
		}
		var err error
		switch {
		case d.f != nil:
			err = zeroFile(d.f, d.block, m, off, n)
		case m == zmDiscard:
			z, ok := d.t.(Zeroer)
			if !ok {
				err = errors.ErrUnsupported
				break
			}
			err = z.ZeroRange(off, n)
		default:
			err = errors.ErrUnsupported
		}
		if err == nil {
			d.setMethod(m)
			return nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("blockcopy: %s %d bytes at %d: %w", zeroMethodNames[m], n, off, err)
		}
		d.zfailed[m].Store(true)
	}
	if err := d.writeZeros(off, n); err != nil {
		return err
	}
	d.setMethod(zmWrite)
	return nil
}

func (d *dev) writeZeros(off, n int64) error {
	d.zmu.Lock()
	if d.zeros == nil {
		d.zeros = alignedBuf(d.zsize)
	}
	z := d.zeros
	d.zmu.Unlock()
	for n > 0 {
		k := min(n, int64(len(z)))
		if err := d.writeAt(z[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (d *dev) setMethod(m int) {
	d.zmu.Lock()
	d.zmethod = zeroMethodNames[m]
	d.zmu.Unlock()
}

func (d *dev) zeroMethod() string {
	d.zmu.Lock()
	defer d.zmu.Unlock()
	return d.zmethod
}
