package catalog

import (
	"bytes"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/store"
)

// world is a catalog over a real state file and blob store in dir.
type world struct {
	dir   string
	st    *store.Store
	blobs *blobstore.Store
	cat   *Service
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dir: t.TempDir()}
	var err error
	if w.st, err = store.Open(filepath.Join(w.dir, "imaged.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.st.Close() })
	if w.blobs, err = blobstore.Open(filepath.Join(w.dir, "images")); err != nil {
		t.Fatal(err)
	}
	w.cat = New(w.st, w.blobs, nil)
	return w
}

// commit puts random bytes (two blocks, the second all zero) into the blob store, unregistered.
func (w *world) commit(t *testing.T) images.Digest {
	t.Helper()
	b := make([]byte, 2*images.BlockSize)
	rand.Read(b[:images.BlockSize])
	d, _, err := w.blobs.Import(t.Context(), bytes.NewReader(b), nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (w *world) register(t *testing.T, ref string, d images.Digest) images.Image {
	t.Helper()
	r, _ := images.ParseRef(ref)
	img, created, err := w.cat.Register(Registration{Ref: r, Digest: d, By: "alice"})
	if err != nil || !created {
		t.Fatalf("register %s: created %v, %v", ref, created, err)
	}
	return img
}

func TestRegister(t *testing.T) {
	w := newWorld(t)
	d := w.commit(t)
	ref := images.Ref{Name: "debian", Tag: "1"}
	reg := Registration{Ref: ref, Digest: d, Source: "https://u:pa55word@example.com/d.raw?X-Amz-Signature=s1g", Format: "raw", By: "alice"}
	img, created, err := w.cat.Register(reg)
	if err != nil || !created {
		t.Fatalf("register: %v %v", created, err)
	}
	// Sizes and hashes are the blob's own; the source is kept without its credentials.
	m, _ := w.blobs.Manifest(d)
	mh, _ := m.Hash()
	if img.Size != 2*images.BlockSize || img.DataBlocks != 1 || img.DataBytes != images.BlockSize || img.ManifestHash != mh || img.ImportedBy != "alice" {
		t.Errorf("registered %+v", img)
	}
	if strings.Contains(img.Source, "pa55word") || strings.Contains(img.Source, "s1g") || len(img.SourceRemoved) != 2 {
		t.Errorf("source %q, removed %v", img.Source, img.SourceRemoved)
	}
	if _, created, err := w.cat.Register(reg); err != nil || created {
		t.Errorf("the same registration again: created %v, %v", created, err)
	}
	if _, _, err := w.cat.Register(Registration{Ref: ref, Digest: w.commit(t)}); !errors.Is(err, images.ErrImmutable) {
		t.Errorf("other bytes under debian@1: %v", err)
	}
	var missing images.Digest
	missing[0] = 1
	if _, _, err := w.cat.Register(Registration{Ref: images.Ref{Name: "debian", Tag: "2"}, Digest: missing}); !errors.Is(err, ErrNoBlob) || !strings.Contains(err.Error(), "imaged image import") {
		t.Errorf("a blob that is not stored: %v", err)
	}
}

// goneBlobs is a blob store whose blobs go (collected as unregistered) between Register's
// manifest read and its catalog write.
type goneBlobs struct{ *blobstore.Store }

func (goneBlobs) Has(images.Digest) bool { return false }

// A registration that races the collection of unregistered blobs never leaves a catalog entry
// without its blob.
func TestRegisterRacesCollection(t *testing.T) {
	w := newWorld(t)
	d := w.commit(t)
	cat := New(w.st, goneBlobs{w.blobs}, nil)
	_, created, err := cat.Register(Registration{Ref: images.Ref{Name: "debian", Tag: "1"}, Digest: d})
	if !errors.Is(err, ErrNoBlob) || created || !strings.Contains(err.Error(), "import the image again") {
		t.Errorf("register: created %v, %v", created, err)
	}
	if imgs, err := w.st.Images(); err != nil || len(imgs) != 0 {
		t.Errorf("catalog after the refused registration: %v %v", imgs, err)
	}
}

func TestDeleteRemovesTheBlobOnlyWhenUnused(t *testing.T) {
	w := newWorld(t)
	shared, own := w.commit(t), w.commit(t)
	w.register(t, "debian@1", shared)
	w.register(t, "debian@2", shared)
	w.register(t, "debian@3", own)
	if _, err := w.cat.Promote(images.Ref{Name: "debian", Tag: "3"}, "stable", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.cat.Delete(images.Ref{Name: "debian", Tag: "3"}, "alice"); !errors.Is(err, images.ErrInUse) || !w.blobs.Has(own) {
		t.Errorf("delete of a channel's image: %v; blob present %v", err, w.blobs.Has(own))
	}
	if _, removed, err := w.cat.Delete(images.Ref{Name: "debian", Tag: "1"}, "alice"); err != nil || removed || !w.blobs.Has(shared) {
		t.Errorf("delete of one of two versions with the same bytes: removed %v, %v; blob present %v", removed, err, w.blobs.Has(shared))
	}
	if img, removed, err := w.cat.Delete(images.Ref{Name: "debian", Tag: "2"}, "alice"); err != nil || !removed || w.blobs.Has(shared) || img.Digest != shared {
		t.Errorf("delete of the last version with those bytes: %v removed %v, %v; blob present %v", img.Ref(), removed, err, w.blobs.Has(shared))
	}
	if _, _, err := w.cat.Delete(images.Ref{Name: "debian", Tag: "2"}, "alice"); err == nil {
		t.Error("a second delete succeeded")
	}
}

func TestPrune(t *testing.T) {
	w := newWorld(t)
	var ds []images.Digest // oldest first: each registration is a commit later than the one before
	for _, v := range []string{"1", "2", "3", "4"} {
		d := w.commit(t)
		ds = append(ds, d)
		w.register(t, "debian@"+v, d)
	}
	if _, err := w.cat.Promote(images.Ref{Name: "debian", Tag: "1"}, "stable", "alice"); err != nil {
		t.Fatal(err)
	}
	pruned, kept, err := w.cat.Prune(1, "alice")
	if err != nil || len(pruned) != 2 || strings.Join(kept["debian@1"], ",") != "channel debian@stable" {
		t.Fatalf("prune: %v kept %v, %v", pruned, kept, err)
	}
	for i, present := range []bool{true, false, false, true} {
		if w.blobs.Has(ds[i]) != present {
			t.Errorf("debian@%d's blob present %v, want %v", i+1, !present, present)
		}
	}
}
