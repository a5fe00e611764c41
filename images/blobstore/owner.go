package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Who owns the store's files. The store lives in the daemon's state directory, which systemd
// gives to the daemon's user (StateDirectory=imaged, User=imaged). The daemon reads every blob
// and manifest, and removes them; but imports run in the CLI, as root, and files root made with
// its own modes were not the daemon's to read (a manifest was 0600), so an import through a
// running daemon failed with "permission denied". So whoever creates them, the store's files and
// directories belong to the owner and group of the directory that holds the store, as if the
// daemon had made them: files 0640, directories 0750 (the unit's UMask=0027). Not world-readable:
// nothing outside imaged needs the bytes, and the daemon serves them to whom it chooses; the
// group may read them (backups, an operators' group). Only root can give a file away; anyone
// else creates files that are theirs already, the daemon's user included.
const (
	fileMode = 0o640
	dirMode  = 0o750
)

// owner is the user and group the store's files belong to.
type owner struct {
	uid, gid int
	chown    bool // this process is root and makes files for another owner
}

// storeOwner is the owner of the directory holding dir (which exists).
func storeOwner(dir string) (owner, error) {
	fi, err := os.Stat(filepath.Dir(filepath.Clean(dir)))
	if err != nil {
		return owner{}, fmt.Errorf("blobstore: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{uid: -1, gid: -1}, nil
	}
	o := owner{uid: int(st.Uid), gid: int(st.Gid)}
	o.chown = os.Geteuid() == 0
	return o, nil
}

// give sets a file the store just created to the store's mode and owner.
func (o owner) give(f *os.File) error {
	if err := f.Chmod(fileMode); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	if o.chown {
		if err := f.Chown(o.uid, o.gid); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return nil
}

// repair gives path (a file or directory of the store) to the store's owner, with the store's
// mode, when it belongs to someone else: directories root created, and files an imaged before
// this one wrote as root (a manifest 0600, unreadable to the daemon). Only root can; for anyone
// else it does nothing. Symbolic links and other odd files are left alone.
func (o owner) repair(path string) error {
	if !o.chown {
		return nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile (a GC, a delete)
	} else if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == o.uid && int(st.Gid) == o.gid) {
		return nil
	}
	mode := os.FileMode(fileMode)
	switch {
	case fi.IsDir():
		mode = dirMode
	case !fi.Mode().IsRegular():
		return nil
	}
	if err := os.Lchown(path, o.uid, o.gid); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}
