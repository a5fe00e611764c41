package blockcopy

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fileSize returns the capacity of a regular file (its length) or of a block device.
func fileSize(f *os.File) (size int64, block bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return fi.Size(), false, nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		var n uint64
		err := withFd(f, func(fd uintptr) error {
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
				return fmt.Errorf("BLKGETSIZE64: %w", e)
			}
			return nil
		})
		return int64(n), true, err
	default:
		return 0, false, fmt.Errorf("%s is neither a regular file nor a block device", fi.Mode())
	}
}

func withFd(f *os.File, fn func(fd uintptr) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return err
	}
	return ferr
}

// openDirect opens a second, O_DIRECT descriptor of f's file through /proc/self/fd, so that the
// caller's descriptor keeps its flags for the unaligned tail and for reads.
func openDirect(f *os.File) (*os.File, error) {
	var name string
	withFd(f, func(fd uintptr) error { name = fmt.Sprintf("/proc/self/fd/%d", fd); return nil })
	return os.OpenFile(name, os.O_WRONLY|unix.O_DIRECT, 0)
}

// zeroFile zeroes a range of a file or block device by the given method. Unsupported methods
// return an error matching errors.ErrUnsupported.
//
// On a block device, fallocate(PUNCH_HOLE) is the discard that guarantees zeros on read (the
// kernel's blkdev_fallocate issues WRITE ZEROES with unmap allowed and no fallback, and fails
// with EOPNOTSUPP if the device cannot). BLKDISCARD alone promises nothing about what reads
// return afterwards, so it is not used. BLKZEROOUT is WRITE ZEROES, or the kernel writing zero
// pages itself where the device lacks it.
func zeroFile(f *os.File, block bool, method int, off, n int64) error {
	var err error
	switch {
	case method == zmDiscard:
		err = withFd(f, func(fd uintptr) error {
			return unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	case method == zmZeroOut && block:
		r := [2]uint64{uint64(off), uint64(n)}
		err = withFd(f, func(fd uintptr) error {
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r))); e != 0 {
				return e
			}
			return nil
		})
	case method == zmZeroOut:
		err = withFd(f, func(fd uintptr) error {
			return unix.Fallocate(int(fd), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	default:
		return errors.ErrUnsupported
	}
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOTTY) {
		return fmt.Errorf("%w: %v", errors.ErrUnsupported, err)
	}
	return err
}

// DropCache asks the kernel to forget the file's cached pages (after an fsync they are clean),
// so that read-back verification reads the device, not the page cache.
func DropCache(f *os.File) {
	withFd(f, func(fd uintptr) error { return unix.Fadvise(int(fd), 0, 0, unix.FADV_DONTNEED) })
}
