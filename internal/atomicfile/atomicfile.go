// Package atomicfile replaces files so that a reader, and whatever survives a crash, finds the
// old bytes or the new ones, never a mix or a prefix. The new bytes go to a temporary file beside
// the destination (so the rename cannot cross file systems), which is fsynced, closed and renamed
// over it; then the directory is fsynced, so that the rename itself is durable. This is the
// temp + rename of gokrazy's renameio, with the directory fsync that renameio v2 leaves to its
// callers (google/renameio#42 adds it as an option, unmerged).
//
// The file gets exactly the mode it is given: not reduced by the umask, nor copied from the file
// it replaces (renameio.WriteFile keeps the old file's mode: a key once written 0644 would stay
// readable). The temp file is created 0600 and given its mode before a byte is written, so a
// secret is never readable by others, not even for a moment.
//
// images/blobstore commits its blobs and manifests its own way: its temp files live in the store's
// tmp/ under a flock that tells a live import from a dead one's leftovers, and are renamed into
// content-addressed names; it shares SyncDir.
//
// A leaf on the standard library alone: it ships in the agent.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a temporary file that replaces the file at its path when committed.
type File struct {
	*os.File
	path string
	done bool // committed or cleaned up
}

// Create makes the temporary file for path, in path's directory, with mode perm. Write to it,
// then Commit; defer Cleanup right away, which removes it unless Commit succeeded.
func Create(path string, perm fs.FileMode) (*File, error) {
	// filepath.Dir, not "": os.CreateTemp would put a bare name's temp file in $TMPDIR.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("atomicfile: replace %s: %w", path, err)
	}
	f := &File{File: tmp, path: path}
	// CreateTemp made it 0600 whatever the umask; Chmod is not subject to the umask either.
	if err := tmp.Chmod(perm.Perm()); err != nil {
		f.Cleanup()
		return nil, fmt.Errorf("atomicfile: replace %s: %w", path, err)
	}
	return f, nil
}

// Commit makes what was written the file at path: fsync, close, rename over path, fsync of the
// directory. After an error the temp file is still there for Cleanup, and path is untouched
// unless the rename succeeded and only the directory's fsync failed.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("atomicfile: replace %s: already committed or cleaned up", f.path)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: replace %s: %w", f.path, err)
	}
	if err := f.File.Close(); err != nil {
		return fmt.Errorf("atomicfile: replace %s: %w", f.path, err)
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		return fmt.Errorf("atomicfile: replace %s: %w", f.path, err)
	}
	f.done = true
	return SyncDir(filepath.Dir(f.path))
}

// Cleanup closes and removes the temporary file unless Commit succeeded; after that it does
// nothing. It is meant to be deferred.
func (f *File) Cleanup() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close() // a second Close after a failed Commit only says it is closed already
	os.Remove(f.Name())
}

// WriteFile replaces path with data, mode perm, atomically (Create, Write, Commit).
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: replace %s: %w", path, err)
	}
	return f.Commit()
}

// SyncDir fsyncs a directory, which makes durable the names created, renamed or removed in it.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", dir, err)
	}
	return nil
}
