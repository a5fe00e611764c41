package atomicfile

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// files is what dir holds: each name with its contents ("<dir>" for a directory).
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		m[e.Name()] = "<dir>"
		if !e.IsDir() {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m[e.Name()] = string(b)
		}
	}
	return m
}

// holds fails unless dir holds exactly want.
func holds(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", dir, diff)
	}
}

// The mode is the one asked for: not reduced by the umask, not the old file's (os.WriteFile
// keeps an existing file's mode; renameio.WriteFile copies it), and already set on the temp file
// before anything is written.
func TestMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	for _, perm := range []fs.FileMode{0o600, 0o644, 0o640} {
		f, err := Create(p, perm)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := f.Stat(); err != nil || fi.Mode().Perm() != perm {
			t.Errorf("the empty temp file is %v (%v), want %v", fi.Mode().Perm(), err, perm)
		}
		f.Cleanup()
		if err := WriteFile(p, []byte("new"), perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("WriteFile(%v) over a 0644 file under umask 077 made %v", perm, fi.Mode().Perm())
		}
		os.Chmod(p, 0o644)
	}
	holds(t, dir, map[string]string{"key.pem": "new"})
}

// A reader that has the file open keeps reading the old bytes, whole; the next open gets the new
// ones. Rewriting in place (os.WriteFile) would truncate under the reader.
func TestReaderSeesOldOrNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "initrd.img")
	oldBytes := strings.Repeat("old ", 4096)
	if err := WriteFile(p, []byte(oldBytes), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != oldBytes {
		t.Errorf("the reader that had the old file open read %d bytes (%v), want the %d old ones", len(got), err, len(oldBytes))
	}
	holds(t, dir, map[string]string{"initrd.img": "new"}) // opened afterwards: the new bytes, and nothing else left

}

// A writer that never commits (it failed, or died) leaves the old file as it was.
func TestUncommitted(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("half of the n"); err != nil {
		t.Fatal(err)
	}
	// Died here: the temp file is beside it, hidden, and the file is the old one.
	tmp := filepath.Base(f.Name())
	if filepath.Dir(f.Name()) != dir || !strings.HasPrefix(tmp, ".state.json.tmp-") {
		t.Errorf("temp file %s, want .state.json.tmp-* in %s", f.Name(), dir)
	}
	holds(t, dir, map[string]string{"state.json": "old", tmp: "half of the n"})
	f.Cleanup() // failed instead: nothing is left of it
	holds(t, dir, map[string]string{"state.json": "old"})
	if err := f.Commit(); err == nil {
		t.Error("Commit after Cleanup succeeded")
	}
}

// A rename that fails (here: the destination is a directory that is not empty) is an error that
// names the file, and Cleanup leaves nothing behind.
func TestCommitFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "busy")
	if err := os.MkdirAll(filepath.Join(p, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(p, []byte("x"), 0o644)
	if err == nil || !strings.Contains(err.Error(), "atomicfile: replace "+p) {
		t.Fatalf("WriteFile over a directory: %v", err)
	}
	holds(t, dir, map[string]string{"busy": "<dir>"})
	holds(t, p, map[string]string{"inside": "<dir>"})
	if _, err := Create(filepath.Join(dir, "missing", "f"), 0o644); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}

// The temp file is made beside the destination, never in $TMPDIR (which may be another file
// system, or under PrivateTmp another namespace), also for a bare file name.
func TestTempBeside(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir := t.TempDir()
	t.Chdir(dir)
	f, err := Create("bare", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Cleanup()
	if filepath.Dir(f.Name()) != "." {
		t.Errorf("temp file of a bare name is %s, want it in the working directory", f.Name())
	}
	f.WriteString("data")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Cleanup() // after Commit: does nothing
	holds(t, dir, map[string]string{"bare": "data"})
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "gone")); err == nil || !strings.Contains(err.Error(), "atomicfile: fsync") {
		t.Errorf("SyncDir of a missing directory: %v", err)
	}
}
