package store

import (
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

// ref is s parsed as NAME@TAG.
func ref(s string) images.Ref {
	r, err := images.ParseRef(s)
	if err != nil {
		panic(err)
	}
	return r
}

// digest is the digest whose hex is c (a hex digit) 64 times: a test digest that reads well.
func digest(c string) images.Digest {
	d, err := images.ParseDigest(strings.Repeat(c, 64))
	if err != nil {
		panic(err)
	}
	return d
}

func catalog(t *testing.T) *Store {
	t.Helper()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { s.Close() })
	t0 := time.Unix(1700000000, 0).UTC()
	for i, v := range []string{"1", "2", "3", "4"} {
		if _, err := s.PutImage(images.Image{Name: "win10", Version: v, Digest: digest(v), Imported: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestImmutableVersions(t *testing.T) {
	s := catalog(t)
	if created, err := s.PutImage(images.Image{Name: "win10", Version: "1", Digest: digest("1")}); err != nil || created {
		t.Errorf("same bytes again: created=%v %v", created, err)
	}
	if _, err := s.PutImage(images.Image{Name: "win10", Version: "1", Digest: digest("9")}); !errors.Is(err, images.ErrImmutable) {
		t.Errorf("other bytes under the same version: %v", err)
	}
}

func TestPromoteRollbackResolve(t *testing.T) {
	s := catalog(t)
	for _, v := range []string{"1", "2", "3"} {
		if _, err := s.Promote("win10", v, "production", "alice"); err != nil {
			t.Fatal(err)
		}
	}
	if img, err := s.ResolveImage(ref("win10@production")); err != nil || img.Version != "3" || img.Channel != "win10@production" {
		t.Fatalf("production = %+v %v", img, err)
	}
	if img, err := s.ResolveImage(ref("win10@3")); err != nil || img.Channel != "" {
		t.Errorf("a version resolved through a channel: %+v %v", img, err)
	}
	for _, want := range []string{"2", "1"} {
		ch, err := s.Rollback("win10", "production", "bob")
		if err != nil || ch.Version != want {
			t.Fatalf("rollback: %+v %v, want %s", ch, err, want)
		}
	}
	if _, err := s.Rollback("win10", "production", "bob"); !errors.Is(err, images.ErrNoHistory) {
		t.Errorf("rollback past the first version: %v", err)
	}
	ch, _ := s.Rollback("win10", "nope", "bob")
	if ch.Version != "" {
		t.Error("rollback of a missing channel")
	}
	chs, _ := s.Channels()
	if len(chs) != 1 || len(chs[0].History) != 5 || chs[0].History[4].By != "bob" || chs[0].History[4].Action != "rollback" {
		t.Errorf("history: %+v", chs)
	}
	if _, err := s.Promote("win10", "9", "production", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("promote of a missing version: %v", err)
	}
	if _, err := s.Promote("win10", "1", "2", "x"); err == nil {
		t.Error("a channel named like a version was accepted")
	}
	if img, err := s.ResolveImage(images.Ref{Digest: digest("4")}); err != nil || img.Version != "4" || img.Channel != "" {
		t.Errorf("by digest: %+v %v", img, err)
	}
	// The latest imported of the versions with the same bytes.
	if _, err := s.PutImage(images.Image{Name: "win10", Version: "4b", Digest: digest("4"), Imported: time.Unix(1800000000, 0)}); err != nil {
		t.Fatal(err)
	}
	if img, err := s.ResolveImage(images.Ref{Digest: digest("4")}); err != nil || img.Version != "4b" {
		t.Errorf("by digest, two versions: %+v %v", img, err)
	}
	if _, err := s.ResolveImage(images.Ref{Digest: digest("f")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("an unknown digest: %v", err)
	}
	if img, err := s.ResolveImage(images.Ref{Digest: digest("4")}); err != nil || img.Version != "4b" {
		t.Errorf("a ref that is a digest: %+v %v", img, err)
	}
	for _, bad := range []images.Ref{{Name: "win10"}, {Tag: "1"}, {Name: "win11", Tag: "1"}, {}} {
		if _, err := s.ResolveImage(bad); err == nil {
			t.Errorf("%+v resolved", bad)
		}
	}
}

func TestDeleteAndPruneKeepWhatIsReferenced(t *testing.T) {
	s := catalog(t)
	s.PutImage(images.Image{Name: "win10", Version: "1b", Digest: digest("1"), Imported: time.Unix(1600000000, 0)})
	s.Promote("win10", "1", "production", "alice")
	s.SyncMachines([]machines.Machine{{ID: "m1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:00:00:01")}}})
	if err := s.AssignImage("m1", digest("2"), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeleteImage("win10", "1"); !errors.Is(err, images.ErrInUse) || !strings.Contains(err.Error(), "channel win10@production") {
		t.Errorf("delete of a channel's version: %v", err)
	}
	if _, _, err := s.DeleteImage("win10", "2"); !errors.Is(err, images.ErrInUse) || !strings.Contains(err.Error(), "machine m1") {
		t.Errorf("delete of an assigned image: %v", err)
	}
	// Versions 1b (oldest, same digest as 1), 1 (channel), 2 (assigned), 3, 4: keep 1 → only
	// 4 is kept by age; 1 and 2 are kept by reference; 1b and 3 go. 1b's blob is still 1's.
	removed, kept, err := s.Prune(1)
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	for _, p := range removed {
		gone = append(gone, p.Image.Version)
		if p.Image.Version == "1b" && p.BlobFree {
			t.Error("1b's blob is still used by win10@1")
		}
		if p.Image.Version == "3" && !p.BlobFree {
			t.Error("3's blob should be free")
		}
	}
	if strings.Join(gone, ",") != "3,1b" || len(kept) != 2 {
		t.Errorf("pruned %v, kept %v", gone, kept)
	}
	imgs, _ := s.Images()
	if len(imgs) != 3 {
		t.Errorf("%d images left", len(imgs))
	}
	if _, _, err := s.Prune(0); err == nil {
		t.Error("prune keeping 0 accepted")
	}
}

func TestSyncKeepsAssignments(t *testing.T) {
	s := catalog(t)
	s.SyncMachines([]machines.Machine{{ID: "m1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:00:00:01")}}})
	s.AssignImage("m1", digest("e"), "win10@production")
	s.SyncMachines([]machines.Machine{{ID: "m1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:00:00:01")}, WorkerGroup: "g"}})
	m, _ := s.Machine("m1")
	if m.AssignedImage != digest("e") || m.AssignedChannel != "win10@production" || m.WorkerGroup != "g" {
		t.Errorf("%+v", m)
	}
}

// Sources are kept without credentials: those PutImage is given, and those an imaged before this
// one stored as given, which Open redacts.
func TestSourceRedacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	const src = "https://u:pw@b.s3.amazonaws.com/k.raw?X-Amz-Credential=AKIA&X-Amz-Signature=ff&versionId=3"
	const clean = "https://b.s3.amazonaws.com/k.raw?versionId=3"
	if _, err := s.PutImage(images.Image{Name: "new", Version: "1", Digest: digest("1"), Source: src}); err != nil {
		t.Fatal(err)
	}
	old := images.Image{Name: "old", Version: "1", Digest: digest("2"), Source: src}
	if err := s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketImages, old.Ref().String(), old) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	imgs, err := s.Images()
	if err != nil || len(imgs) != 2 {
		t.Fatalf("images: %v %v", imgs, err)
	}
	for _, img := range imgs {
		if img.Source != clean || strings.Join(img.SourceRemoved, ",") != "userinfo,X-Amz-Credential,X-Amz-Signature" {
			t.Errorf("%s: source %q, removed %q", img.Ref(), img.Source, img.SourceRemoved)
		}
	}
}

// ChannelDigests says where every channel points now; a channel resolved image is never stored
// with its channel (it is not part of the catalog entry).
func TestChannelDigests(t *testing.T) {
	s := catalog(t)
	s.Promote("win10", "1", "production", "alice")
	s.Promote("win10", "2", "canary", "alice")
	got, err := s.ChannelDigests()
	want := map[string]images.Digest{"win10@production": digest("1"), "win10@canary": digest("2")}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("ChannelDigests = %v %v, want %v", got, err, want)
	}
	s.Promote("win10", "3", "production", "bob")
	if got, _ := s.ChannelDigests(); got["win10@production"] != digest("3") {
		t.Errorf("after a promote: %v", got)
	}
	img, _ := s.ResolveImage(ref("win10@canary"))
	img.Version = "2c"
	if _, err := s.PutImage(img); err != nil {
		t.Fatal(err)
	}
	if stored, _ := s.ResolveImage(ref("win10@2c")); stored.Channel != "" {
		t.Errorf("stored with its channel: %+v", stored)
	}
}
