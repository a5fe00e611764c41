package blobstore

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOwner: root imports into a store whose directory belongs to the daemon's user; every file
// and directory is the daemon's, 0640 and 0750. Images an older imaged wrote as root (a manifest
// 0600) are given back to the daemon's user when root next opens the store.
func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (gives files to uid 65534)")
	}
	const daemon = 65534
	state := t.TempDir()
	if err := os.Chown(state, daemon, daemon); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "images")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := s.Import(t.Context(), bytes.NewReader(image(3*bs+5, 9, 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	// What an imaged before this one left: root's, 0600.
	old := filepath.Join(dir, "manifests", "sha256", "00"+d.Hex()[2:])
	if err := os.WriteFile(old, []byte("m"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		n++
		st := fi.Sys().(*syscall.Stat_t)
		want := os.FileMode(fileMode)
		if fi.IsDir() {
			want = os.ModeDir | dirMode
		}
		if st.Uid != daemon || st.Gid != daemon || fi.Mode() != want {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", p, st.Uid, st.Gid, fi.Mode(), daemon, daemon, want)
		}
		return nil
	})
	if n != 9 { // images, blobs, sha256, blob, manifests, sha256, 2 manifests, tmp
		t.Errorf("walked %d files and directories, want 9", n)
	}
}
