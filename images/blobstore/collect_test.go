package blobstore

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
)

// TestCollect: images nobody claims are collected once older than grace, never before, and
// never one that is claimed; their blobs wait in tmp/ for free (or GC).
func TestCollect(t *testing.T) {
	s, dir := open(t)
	imp := func(seed uint64) images.Digest {
		d, _, err := s.Import(t.Context(), bytes.NewReader(image(2*bs+7, seed)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	kept, orphan := imp(1), imp(2)
	keep := func(d images.Digest) bool { return d == kept }
	now := time.Now()

	// Just committed: its import is about to register it.
	if ds, free, err := s.Collect(now.Add(59*time.Minute), time.Hour, keep); err != nil || len(ds) != 0 || free() != nil {
		t.Fatalf("collect before the grace ran out: %v %v", ds, err)
	}
	ds, free, err := s.Collect(now.Add(61*time.Minute), time.Hour, keep)
	if err != nil || len(ds) != 1 || ds[0] != orphan {
		t.Fatalf("collect after the grace: %v %v", ds, err)
	}
	if s.Has(orphan) || !s.Has(kept) {
		t.Errorf("after collect: orphan present %v, claimed image present %v", s.Has(orphan), s.Has(kept))
	}
	if _, err := s.Open(orphan); !errors.Is(err, ErrNotFound) {
		t.Errorf("open a collected image: %v", err)
	}
	if tmp := files(t, dir, "tmp"); len(tmp) != 1 || tmp[0] != "collected-"+orphan.Hex() {
		t.Errorf("tmp before free: %v", tmp)
	}
	if err := free(); err != nil || len(files(t, dir, "tmp")) != 0 {
		t.Errorf("free: %v, tmp %v", err, files(t, dir, "tmp"))
	}
	// A year on, the claimed image is still there.
	if ds, _, err := s.Collect(now.Add(365*24*time.Hour), time.Hour, keep); err != nil || len(ds) != 0 || !s.Has(kept) {
		t.Errorf("a claimed image was collected: %v %v", ds, err)
	}
	// What free did not get to (a daemon stopped in between), GC removes.
	orphan = imp(3)
	if _, _, err := s.Collect(now.Add(2*time.Hour), time.Hour, keep); err != nil {
		t.Fatal(err)
	}
	if n, err := s.GC(StrayBlobAge); err != nil || n != 1 || len(files(t, dir, "tmp")) != 0 {
		t.Errorf("GC of a collected blob: %d %v", n, err)
	}
	if _, err := os.Stat(s.blobPath(kept)); err != nil {
		t.Error(err)
	}
}
