package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
)

// nobody is the unprivileged user the daemon runs as in these tests, as imaged's unit runs it as
// user imaged.
const nobody = 65534

// TestImportAsRootIntoUnprivilegedDaemon runs the daemon as an unprivileged user owning its state
// directory (as systemd/imaged.service runs it: User=imaged, StateDirectory=imaged, mode 0750,
// UMask=0027) and imports an image as root through the CLI while it runs: the CLI writes the
// blob and manifest into the store, the daemon reads the manifest to register the image, and
// then serves both to agents. Files root creates must be the daemon's to read.
func TestImportAsRootIntoUnprivilegedDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (runs imaged serve as uid 65534 and imports as root)")
	}
	dir := t.TempDir()
	// The test's temporary directories are 0700; the daemon's user must reach its state dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	path := imageConfig(t, dir)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte(strings.Replace(mustRead(t, path), "boot: {assets_dir: "+dir+"/boot", "boot: {assets_dir: "+state+"/boot", 1)), 0o644)
	addr, logs := serveProcess(t, path, &syscall.Credential{Uid: nobody, Gid: nobody})

	raw := make([]byte, 5*images.BlockSize+4321)
	rand.Read(raw[images.BlockSize:]) // block 0 zero, a hole in the blob
	src := filepath.Join(dir, "os.raw")
	os.WriteFile(src, raw, 0o600)
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])

	out, _, err := runCmd(t, "image", "import", "-config", path, "-by", "root", "os@1", src)
	if err != nil {
		t.Fatalf("import as root into a daemon running as uid %d: %v\n%s\ndaemon log:\n%s", nobody, err, out, logs)
	}
	out, _, err = runCmd(t, "image", "show", "-config", path, "os@1")
	var info api.ImageInfo
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Image.Digest != "sha256:"+digest {
		t.Fatalf("show: %v\n%s", err, out)
	}

	// The daemon serves what root imported: the blob and the manifest the catalog names.
	get := func(what string) []byte {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/images/" + digest + "/" + what)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %s\ndaemon log:\n%s", what, resp.Status, b, logs)
		}
		return b
	}
	if b := get("blob"); sha256.Sum256(b) != sum {
		t.Errorf("served blob: %d bytes, not the image", len(b))
	}
	if m := sha256.Sum256(get("manifest")); hex.EncodeToString(m[:]) != info.Image.ManifestHash {
		t.Errorf("served manifest hashes to %x, the catalog says %s", m, info.Image.ManifestHash)
	}

	// Everything in the store is the daemon user's, and no one else's to read.
	store := filepath.Join(state, "images")
	filepath.Walk(store, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		want := os.FileMode(0o640)
		if fi.IsDir() {
			want = os.ModeDir | 0o750
		}
		if st.Uid != nobody || st.Gid != nobody || fi.Mode() != want {
			t.Errorf("%s: owner %d:%d, mode %v; want %d:%d, %v", p, st.Uid, st.Gid, fi.Mode(), nobody, nobody, want)
		}
		return nil
	})

	// The daemon, not root, removes what root imported.
	if out, _, err := runCmd(t, "image", "delete", "-config", path, "os@1"); err != nil || !strings.Contains(out, "blob removed") {
		t.Errorf("delete through the daemon: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(store, "blobs", "sha256", digest)); !os.IsNotExist(err) {
		t.Errorf("blob after delete: %v", err)
	}
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Error("the daemon complained")
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", logs)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
