package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/imaged/imaged/images"
)

// Collect removes the images that keep does not claim (the catalog knows no image of theirs) and
// whose files were last written more than grace before now: what an import killed between
// committing its blob and registering it left, which nothing would ever reference, serve to a
// plan or remove. The age is that of the newer of blob and manifest, so that an image committed
// again (the same bytes imported anew: a fresh blob renamed over the old) counts as new; grace is
// the time an import has between its commit and its registration.
//
// Each image is made absent at once (its manifest removed, its blob moved into tmp/), so the
// caller may hold a lock that keeps keep's answer true (no registration meanwhile) for as short a
// time as renames take; free then removes the blobs, which for a large image takes a while, and
// should be called once that lock is released. What free does not get to, the next GC does.
func (s *Store) Collect(now time.Time, grace time.Duration, keep func(images.Digest) bool) (collected []images.Digest, free func() error, err error) {
	var moved []string
	free = func() error {
		var errs []error
		for _, p := range moved {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("blobstore: %w", err))
			}
		}
		return errors.Join(errs...)
	}
	ds, err := s.List()
	if err != nil {
		return nil, free, err
	}
	for _, d := range ds {
		if keep(d) {
			continue
		}
		written, err := lastWritten(s.manifestPath(d), s.blobPath(d))
		if err != nil {
			return collected, free, err
		}
		if now.Sub(written) < grace {
			continue
		}
		s.mu.Lock()
		delete(s.mhash, d)
		s.mu.Unlock()
		if err := os.Remove(s.manifestPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return collected, free, fmt.Errorf("blobstore: collect %s: %w", d, err)
		}
		collected = append(collected, d)
		// An unlocked name in tmp/: GC removes it if free does not.
		p := filepath.Join(s.tmp, "collected-"+d.Hex())
		if err := os.Rename(s.blobPath(d), p); err == nil {
			moved = append(moved, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return collected, free, fmt.Errorf("blobstore: collect %s: %w", d, err)
		}
	}
	if len(collected) > 0 {
		if err := syncDir(s.manifests); err != nil {
			return collected, free, err
		}
	}
	return collected, free, nil
}

// lastWritten is the newest modification or status change time of the files that exist among
// paths. The change time covers a rename (Linux sets it on the renamed inode): a blob written long
// ago, fsynced for minutes, then committed, is as new as its commit.
func lastWritten(paths ...string) (time.Time, error) {
	var t time.Time
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return t, fmt.Errorf("blobstore: %w", err)
		}
		if fi.ModTime().After(t) {
			t = fi.ModTime()
		}
		if c := changeTime(fi); c.After(t) {
			t = c
		}
	}
	return t, nil
}
