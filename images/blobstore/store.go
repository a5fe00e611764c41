// Package blobstore keeps images on disk, addressed by their digest:
//
//	dir/blobs/sha256/<hex>      the raw image, sparse (zero blocks are holes)
//	dir/manifests/sha256/<hex>  its manifest, in the canonical encoding
//	dir/tmp/                    imports in progress
//
// An image is present when its manifest is: Import writes the blob, then the manifest, each
// with temp file, fsync, rename, and fsync of the directory, so an interrupted import leaves
// nothing but a temp file, and the next GC (Open runs one) removes it: a live import holds a lock
// on its temp file, a dead one's is unlocked (tmp.go). The same bytes imported twice (or at
// once) are stored once. The store knows nothing of names, versions or references: the
// catalog does, and decides what Delete may remove.
//
// Files and directories belong to the owner of the directory holding the store (the daemon's
// state directory), whoever makes them: the daemon reads what root imports (owner.go).
package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/atomicfile"
)

// ErrNotFound is returned for a digest the store does not hold. It matches fs.ErrNotExist too.
var ErrNotFound = fmt.Errorf("blobstore: image not found: %w", fs.ErrNotExist)

// StrayBlobAge is how long a blob without a manifest may sit before Open's GC removes it: an
// import renames its blob into place, then writes the manifest.
const StrayBlobAge = time.Hour

// Store is a content-addressed image store in one directory. It is safe for concurrent use, by
// several goroutines and several processes.
type Store struct {
	dir, blobs, manifests, tmp string
	owner                      owner

	mu    sync.Mutex
	mhash map[images.Digest]images.Hash // manifest hashes, for ETags (manifests are immutable)
}

// Open opens (creating if need be) the store in dir and removes leftovers: the temp files of
// imports that died, and blobs without a manifest older than StrayBlobAge.
// Run as root, it also gives the store's directories and images that belong to someone else to
// the store's owner (see owner.go).
func Open(dir string) (*Store, error) {
	s := &Store{
		dir:       dir,
		blobs:     filepath.Join(dir, "blobs", "sha256"),
		manifests: filepath.Join(dir, "manifests", "sha256"),
		tmp:       filepath.Join(dir, "tmp"),
		mhash:     map[images.Digest]images.Hash{},
	}
	for _, d := range []string{s.blobs, s.manifests, s.tmp} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	var err error
	if s.owner, err = storeOwner(dir); err != nil {
		return nil, err
	}
	if err := s.repair(); err != nil {
		return nil, err
	}
	if _, err := s.GC(StrayBlobAge); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) blobPath(d images.Digest) string     { return filepath.Join(s.blobs, d.Hex()) }
func (s *Store) manifestPath(d images.Digest) string { return filepath.Join(s.manifests, d.Hex()) }

// Import reads a raw image from r to its end, in one pass: it writes the blob sparsely (zero
// blocks are skipped, left as holes), computes its manifest, and commits both. progress, if not
// nil, is called with the number of bytes read as they are. On any error, or when ctx is done,
// nothing is left behind.
func (s *Store) Import(ctx context.Context, r io.Reader, progress func(n int64)) (images.Digest, *images.Manifest, error) {
	f, err := s.createTemp("import-*")
	if err != nil {
		return images.Digest{}, nil, err
	}
	// f stays open, so locked, until it is renamed into place or removed (tmp.go).
	committed := false
	defer func() {
		if !committed {
			os.Remove(f.Name())
		}
		f.Close()
	}()
	var blocks []images.Block
	record := func(i int64, b []byte, h images.Hash, zero bool) error {
		blocks = append(blocks, images.Block{SHA256: h, Zero: zero})
		return nil
	}
	// Zero blocks are skipped: holes in a fresh file (Truncate below sets its length). Runs of
	// data blocks go out in one write.
	write := func(off int64, b []byte, zero []bool) error {
		for i := 0; i < len(zero); {
			if zero[i] {
				i++
				continue
			}
			j := i + 1
			for j < len(zero) && !zero[j] {
				j++
			}
			lo, hi := i*images.BlockSize, min(j*images.BlockSize, len(b))
			if _, err := f.WriteAt(b[lo:hi], off+int64(lo)); err != nil {
				return fmt.Errorf("blobstore: write at %d: %w", off+int64(lo), err)
			}
			i = j
		}
		startWriteback(f, off, int64(len(b)))
		return nil
	}
	d, size, err := hashImage(ctx, readFull(r), record, write, progress)
	if err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: import: %w", err)
	}
	if size == 0 {
		return images.Digest{}, nil, errors.New("blobstore: import: the image is empty")
	}
	m := &images.Manifest{Size: size, Digest: d, Blocks: blocks}
	enc, err := m.MarshalBinary()
	if err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: import: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := f.Sync(); err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: import: %w", err)
	}
	// Rename over a blob already there: the same bytes (imported before, or at this moment by
	// another import), so readers that have it open are undisturbed, and a damaged copy is
	// repaired.
	if err := os.Rename(f.Name(), s.blobPath(d)); err != nil {
		return images.Digest{}, nil, fmt.Errorf("blobstore: %w", err)
	}
	committed = true
	if err := syncDir(s.blobs); err != nil {
		return images.Digest{}, nil, err
	}
	if err := s.writeManifest(d, enc); err != nil {
		return images.Digest{}, nil, err
	}
	return d, m, nil
}

// writeManifest commits a manifest: temp file, fsync, rename, fsync of the directory. A
// manifest already there with these bytes is left alone.
func (s *Store) writeManifest(d images.Digest, enc []byte) error {
	if old, err := os.ReadFile(s.manifestPath(d)); err == nil && bytes.Equal(old, enc) {
		return nil
	}
	f, err := s.createTemp("manifest-*")
	if err != nil {
		return err
	}
	defer f.Close()           // locked until renamed (tmp.go)
	defer os.Remove(f.Name()) // after a rename, a no-op
	_, err = f.Write(enc)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(f.Name(), s.manifestPath(d))
	}
	if err != nil {
		return fmt.Errorf("blobstore: write manifest of %s: %w", d, err)
	}
	return syncDir(s.manifests)
}

// Has reports whether the store holds the image.
func (s *Store) Has(d images.Digest) bool {
	_, err1 := os.Stat(s.manifestPath(d))
	_, err2 := os.Stat(s.blobPath(d))
	return err1 == nil && err2 == nil
}

// Manifest returns an image's manifest.
func (s *Store) Manifest(d images.Digest) (*images.Manifest, error) {
	b, err := os.ReadFile(s.manifestPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	} else if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	var m images.Manifest
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("blobstore: manifest of %s: %w", d, err)
	}
	if m.Digest != d {
		return nil, fmt.Errorf("blobstore: the manifest stored for %s describes %s", d, m.Digest)
	}
	return &m, nil
}

// Open opens an image's blob for reading.
func (s *Store) Open(d images.Digest) (*os.File, error) {
	if _, err := os.Stat(s.manifestPath(d)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
	} else if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return f, nil
}

// OpenManifest opens an image's manifest file (its canonical encoding) and returns its hash.
func (s *Store) OpenManifest(d images.Digest) (*os.File, images.Hash, error) {
	f, err := os.Open(s.manifestPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, images.Hash{}, fmt.Errorf("%w: %s", ErrNotFound, d)
	} else if err != nil {
		return nil, images.Hash{}, fmt.Errorf("blobstore: %w", err)
	}
	s.mu.Lock()
	h, ok := s.mhash[d]
	s.mu.Unlock()
	if !ok {
		sum := sha256.New()
		if _, err := io.Copy(sum, f); err != nil {
			f.Close()
			return nil, images.Hash{}, fmt.Errorf("blobstore: %w", err)
		}
		sum.Sum(h[:0])
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, images.Hash{}, fmt.Errorf("blobstore: %w", err)
		}
		s.mu.Lock()
		s.mhash[d] = h
		s.mu.Unlock()
	}
	return f, h, nil
}

// Delete removes an image: its manifest first (so that it is no longer present), then its
// blob. The caller checks that nothing refers to it.
func (s *Store) Delete(d images.Digest) error {
	s.mu.Lock()
	delete(s.mhash, d)
	s.mu.Unlock()
	err := os.Remove(s.manifestPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(s.blobPath(d)); serr != nil {
			return fmt.Errorf("%w: %s", ErrNotFound, d)
		}
	} else if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	if err := syncDir(s.manifests); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %w", err)
	}
	return syncDir(s.blobs)
}

// List returns the digests of the images present, sorted.
func (s *Store) List() ([]images.Digest, error) {
	ents, err := os.ReadDir(s.manifests)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	var ds []images.Digest
	for _, e := range ents {
		d, err := images.ParseDigest(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b images.Digest) int { return bytes.Compare(a[:], b[:]) })
	return ds, nil
}

// GC removes what interrupted imports and deletes left behind: temp files no live import holds
// (tmp.go), and blobs without a manifest once unmodified for olderThan. It returns how many files
// it removed.
func (s *Store) GC(olderThan time.Duration) (int, error) {
	removed, err := s.removeStale()
	if err != nil {
		return removed, err
	}
	cutoff := time.Now().Add(-olderThan)
	sweep := func(dir string, stray func(name string) bool) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("blobstore: gc: %w", err)
		}
		for _, e := range ents {
			if !stray(e.Name()) {
				continue
			}
			info, err := e.Info()
			if err != nil || info.ModTime().After(cutoff) {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				removed++
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("blobstore: gc: %w", err)
			}
		}
		return nil
	}
	err = sweep(s.blobs, func(name string) bool {
		if _, err := hex.DecodeString(name); err != nil || strings.ContainsAny(name, "ABCDEF") {
			return false // not ours
		}
		_, err := os.Stat(filepath.Join(s.manifests, name))
		return errors.Is(err, fs.ErrNotExist)
	})
	return removed, err
}

// repair gives the store's directories, blobs and manifests to the store's owner where they
// belong to someone else (only root can; see owner.go).
func (s *Store) repair() error {
	if !s.owner.chown {
		return nil
	}
	for _, d := range []string{s.dir, filepath.Dir(s.blobs), s.blobs, filepath.Dir(s.manifests), s.manifests, s.tmp} {
		if err := s.owner.repair(d); err != nil {
			return err
		}
	}
	for _, d := range []string{s.blobs, s.manifests} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		for _, e := range ents {
			if err := s.owner.repair(filepath.Join(d, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncDir makes the names created, renamed or removed in dir durable. The store commits its own
// temp files (locked in tmp/, see tmp.go) rather than through atomicfile.Create, and shares only this.
func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	return nil
}
