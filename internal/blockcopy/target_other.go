//go:build !linux

package blockcopy

import (
	"errors"
	"fmt"
	"os"
)

func fileSize(f *os.File) (int64, bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return 0, false, fmt.Errorf("%s: only regular files are supported on this OS", fi.Mode())
	}
	return fi.Size(), false, nil
}

func openDirect(*os.File) (*os.File, error) { return nil, errors.ErrUnsupported }

func zeroFile(*os.File, bool, int, int64, int64) error { return errors.ErrUnsupported }

// DropCache does nothing where the kernel has no posix_fadvise.
func DropCache(*os.File) {}
