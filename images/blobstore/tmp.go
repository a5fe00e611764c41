package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Temp files. An import writes its blob into tmp/ and renames it into place when whole; a process
// killed before that (SIGKILL, a crash, a power cut) leaves its temp file behind, and only the
// file's age used to tell a dead import's file from a slow live one. Now whoever writes a temp
// file holds an exclusive flock(2) on it until it is renamed or removed; the kernel drops the
// lock when the process dies, however it dies. So a temp file nobody holds a lock on is a
// leftover, whatever its age, and removeStale removes it; one that is locked is a live import's,
// in this process or another, and is left alone.
//
// The one window: between creating its file and locking it, an import holds no lock, and a sweep
// could take the lock and remove the file. A sweep removes a file only while holding its lock, so
// createTemp, once it has the lock, checks that its name still leads to its file; if not, the
// sweep took it and it makes another.

// createTemp creates a temp file in tmp/, locked (see above) and given to the store's owner.
// The lock lasts until the file is closed.
func (s *Store) createTemp(pattern string) (*os.File, error) {
	// Sweeps are rare (a store's Open, the daemon's collector every few minutes): losing the
	// window once is unlikely, a hundred times in a row means something removes every file here.
	for range 100 {
		f, err := os.CreateTemp(s.tmp, pattern)
		if err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
		if err := flock(f, unix.LOCK_EX); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, err
		}
		mine, err := f.Stat()
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("blobstore: %w", err)
		}
		if there, err := os.Lstat(f.Name()); err == nil && os.SameFile(mine, there) {
			if err := s.owner.give(f); err != nil {
				f.Close()
				os.Remove(f.Name())
				return nil, err
			}
			return f, nil
		}
		f.Close() // a sweep removed it before we locked it
	}
	return nil, fmt.Errorf("blobstore: %s: temp files removed as fast as they are made", s.tmp)
}

// removeStale removes the temp files nobody holds a lock on, and returns how many it removed.
// Files it cannot open (another user's, being created) are left for a sweep that can.
func (s *Store) removeStale() (int, error) {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return 0, fmt.Errorf("blobstore: gc: %w", err)
	}
	removed := 0
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(s.tmp, e.Name())
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close() // a live import's
			continue
		}
		if err == nil {
			// Still ours to remove only if the name leads to the file we locked.
			var mine, there os.FileInfo
			if mine, err = f.Stat(); err == nil {
				if there, err = os.Lstat(p); err == nil && os.SameFile(mine, there) {
					err = os.Remove(p)
					if err == nil {
						removed++
					}
				}
			}
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("blobstore: gc: %w", err)
		}
	}
	return removed, nil
}

// flock applies how (unix.LOCK_EX, with unix.LOCK_NB or not) to f, retrying on EINTR.
func flock(f *os.File, how int) error {
	c, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	var ferr error
	if err := c.Control(func(fd uintptr) {
		for {
			if ferr = unix.Flock(int(fd), how); ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("blobstore: flock %s: %w", f.Name(), ferr)
	}
	return nil
}
