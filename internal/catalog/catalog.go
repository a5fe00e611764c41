// Package catalog owns the image catalog: registering a committed blob as NAME@VERSION,
// resolving a reference, promoting and rolling back channels, deleting an image (and its blob
// when no other version has the same bytes), pruning, and collecting what the blob store holds
// that nothing will ever use. The operator API serves it (the daemon's, and the one the CLI runs
// in-process when no daemon does), so its rules are written once.
//
// It sees the state file and the blob store through the interfaces it declares (Store, Blobs),
// in terms of package images; cmd/imaged passes internal/store and images/blobstore in. It never
// links bbolt. Only the API and cmd/imaged import it.
package catalog

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imaged/imaged/images"
)

// Store keeps the catalog's records; *store.Store implements it. The catalog's rules fail with
// the errors of package images, and what does not exist matches fs.ErrNotExist.
type Store interface {
	Images() ([]images.Image, error)
	Channels() ([]images.Channel, error)
	ResolveImage(ref images.Ref) (images.Image, error)
	PutImage(img images.Image) (created bool, err error)
	DeleteImage(name, version string) (img images.Image, blobFree bool, err error)
	Promote(name, version, channel, by string) (images.Channel, error)
	Rollback(name, channel, by string) (images.Channel, error)
	Prune(keep int) (removed []images.Pruned, kept map[string][]string, err error)
	// WithImageDigests runs fn with the digests of every image, registering none meanwhile.
	WithImageDigests(fn func(digests map[images.Digest]bool) error) error
}

// Blobs is the blob store as the catalog uses it; *blobstore.Store implements it.
type Blobs interface {
	Manifest(d images.Digest) (*images.Manifest, error)
	Has(d images.Digest) bool
	Delete(d images.Digest) error
	Collect(now time.Time, grace time.Duration, keep func(images.Digest) bool) (collected []images.Digest, free func() error, err error)
	GC(olderThan time.Duration) (int, error)
}

var (
	// ErrNoBlob: a registration names a blob the blob store does not have (any more).
	ErrNoBlob = errors.New("not in the blob store")
	// ErrBlobKept: an image left the catalog, but its blob could not be removed.
	ErrBlobKept = errors.New("removed from the catalog, but its blob was not")
	// ErrNoBlobStore: this catalog was given no blob store (only tests do that).
	ErrNoBlobStore = errors.New("this imaged has no blob store")
)

// Service is the catalog: its records and the blobs they name.
type Service struct {
	st    Store
	blobs Blobs // nil: reads and channel moves only
	log   *slog.Logger
}

// New returns the catalog over st and blobs; log records every change (who, what).
func New(st Store, blobs Blobs, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, blobs: blobs, log: log}
}

// List is every image (by name, then import time) and every channel.
func (s *Service) List() ([]images.Image, []images.Channel, error) {
	imgs, err := s.st.Images()
	if err != nil {
		return nil, nil, err
	}
	chs, err := s.st.Channels()
	return imgs, chs, err
}

// Resolve finds the image ref names: NAME@VERSION, NAME@CHANNEL (the image then says its
// Channel) or a digest.
func (s *Service) Resolve(ref images.Ref) (images.Image, error) { return s.st.ResolveImage(ref) }

// Show is the image ref names and the channels of its name.
func (s *Service) Show(ref images.Ref) (images.Image, []images.Channel, error) {
	img, err := s.st.ResolveImage(ref)
	if err != nil {
		return img, nil, err
	}
	chs, err := s.st.Channels()
	mine := []images.Channel{}
	for _, ch := range chs {
		if ch.Name == img.Name {
			mine = append(mine, ch)
		}
	}
	return img, mine, err
}

// Registration names a blob already committed to the blob store as Ref (NAME@VERSION).
type Registration struct {
	Ref    images.Ref
	Digest images.Digest
	Source string // kept without its credentials (images.Image.Source)
	Format string
	By     string
}

// Register records r's blob as r.Ref. Sizes and hashes come from the blob's manifest, never from
// the caller. The same registration again is a no-op (created false); the name@version of other
// bytes is images.ErrImmutable. The image returned is what the catalog keeps.
func (s *Service) Register(r Registration) (img images.Image, created bool, err error) {
	if s.blobs == nil {
		return img, false, ErrNoBlobStore
	}
	m, err := s.blobs.Manifest(r.Digest)
	if err != nil {
		return img, false, fmt.Errorf("blob %s is %w (%v): import the image with `imaged image import`", r.Digest, ErrNoBlob, err)
	}
	mh, err := m.Hash()
	if err != nil {
		return img, false, err
	}
	blocks, data := m.NonZero()
	img = images.Image{Name: r.Ref.Name, Version: r.Ref.Tag, Digest: r.Digest, Size: m.Size, DataBytes: data, DataBlocks: blocks,
		ManifestHash: mh, Source: r.Source, Format: r.Format, Imported: time.Now().UTC(), ImportedBy: r.By}
	if created, err = s.st.PutImage(img); err != nil {
		return img, false, err
	}
	// Collect removes blobs no image references once they are old, holding the catalog while it
	// decides: one could have gone between the manifest read above and PutImage. Once
	// registered it is safe; check that it is here.
	if created && !s.blobs.Has(r.Digest) {
		if _, _, derr := s.st.DeleteImage(img.Name, img.Version); derr != nil {
			s.log.Error("registered an image whose blob was collected meanwhile, and could not take it back", "image", img.Ref(), "err", derr)
		}
		return img, false, fmt.Errorf("blob %s was collected as unregistered while this request registered it (it was older than images.unregistered_grace), so it is %w: import the image again", r.Digest, ErrNoBlob)
	}
	if created {
		s.log.Info("image registered", "image", img.Ref(), "digest", img.Digest, "by", r.By)
	}
	// What the catalog keeps: the source without its credentials, or the earlier registration.
	img, err = s.st.ResolveImage(img.Ref())
	return img, created, err
}

// Promote points channel of ref's name at ref's version (NAME@VERSION).
func (s *Service) Promote(ref images.Ref, channel, by string) (images.Channel, error) {
	ch, err := s.st.Promote(ref.Name, ref.Tag, channel, by)
	if err == nil {
		s.log.Info("channel promoted", "channel", ref.Name+"@"+channel, "version", ref.Tag, "by", by)
	}
	return ch, err
}

// Rollback moves the channel ref names (NAME@CHANNEL) back to its version before the current one.
func (s *Service) Rollback(ref images.Ref, by string) (images.Channel, error) {
	ch, err := s.st.Rollback(ref.Name, ref.Tag, by)
	if err == nil {
		s.log.Info("channel rolled back", "channel", ref.String(), "version", ch.Version, "by", by)
	}
	return ch, err
}

// Delete removes the image ref names (NAME@VERSION) unless a channel or a machine points at it
// (images.ErrInUse), then its blob unless another version has the same bytes.
func (s *Service) Delete(ref images.Ref, by string) (img images.Image, blobRemoved bool, err error) {
	if s.blobs == nil {
		return img, false, ErrNoBlobStore
	}
	img, free, err := s.st.DeleteImage(ref.Name, ref.Tag)
	if err != nil {
		return img, false, err
	}
	s.log.Info("image deleted", "image", img.Ref(), "digest", img.Digest, "by", by)
	if !free {
		return img, false, nil
	}
	return img, true, s.removeBlob(img)
}

// Prune keeps the newest keep versions of every name and removes the older ones (and their blobs
// where no other version has the same bytes), except those a channel or a machine points at:
// kept says which, and why.
func (s *Service) Prune(keep int, by string) (pruned []images.Image, kept map[string][]string, err error) {
	if s.blobs == nil {
		return nil, nil, ErrNoBlobStore
	}
	removed, kept, err := s.st.Prune(keep)
	if err != nil {
		return nil, nil, err
	}
	pruned = []images.Image{}
	var errs []error
	for _, p := range removed {
		pruned = append(pruned, p.Image)
		if p.BlobFree {
			errs = append(errs, s.removeBlob(p.Image))
		}
	}
	s.log.Info("images pruned", "removed", len(removed), "keep", keep, "by", by)
	return pruned, kept, errors.Join(errs...)
}

func (s *Service) removeBlob(img images.Image) error {
	if err := s.blobs.Delete(img.Digest); err != nil {
		s.log.Error("blob of a removed image not deleted", "image", img.Ref(), "digest", img.Digest, "err", err)
		return fmt.Errorf("%s was %w: %w", img.Ref(), ErrBlobKept, err)
	}
	return nil
}
