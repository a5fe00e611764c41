package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/config"
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
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Image.Digest.Hex() != digest {
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
	if m := sha256.Sum256(get("manifest")); images.Hash(m) != info.Image.ManifestHash {
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

// serveLogged runs the daemon of the config at path in-process until the test ends, its log
// (debug level, everything) into logs.
func serveLogged(t *testing.T, path string, logs io.Writer) *daemon {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		d.close()
	})
	return d
}

// TestImportSourceCredentialsDoNotLeak imports from a URL that carries its credentials (a
// password, an S3 presigned URL's signature, key id and session token) through the CLI and the
// running daemon, then reads the catalog as an anonymous client and the CLI would: the source is
// there without them, and says what was taken out. Failed imports with the same URL (refused, a
// closed port, a redirect to another signed URL) never show them in errors, and the daemon's log
// never has them.
func TestImportSourceCredentialsDoNotLeak(t *testing.T) {
	dir := t.TempDir()
	path := imageConfig(t, dir)
	os.WriteFile(path, []byte(mustRead(t, path)+"api: {anonymous_read: true}\n"), 0o644)
	logs := &lockedBuffer{}
	d := serveLogged(t, path, logs)
	base := "http://" + d.httpLn.Addr().String()

	secrets := []string{"pa55word", "s3cr3tsig", "AKIAEXAMPLEKEY", "FwoGsessiontoken", "redirsig"}
	raw := make([]byte, 2*images.BlockSize+99)
	rand.Read(raw)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "http://"+closedAddr+"/os.raw?X-Goog-Signature=redirsig", http.StatusFound)
			return
		case "/refused":
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if u, p, _ := r.BasicAuth(); u != "importer" || p != "pa55word" || r.URL.Query().Get("X-Amz-Signature") != "s3cr3tsig" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(raw)))
	}))
	defer origin.Close()
	signed := func(host, p string) string {
		return fmt.Sprintf("http://importer:pa55word@%s%s?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLEKEY%%2F20260101%%2Fus-east-1%%2Fs3%%2Faws4_request"+
			"&X-Amz-Expires=3600&X-Amz-Security-Token=FwoGsessiontoken&X-Amz-SignedHeaders=host&X-Amz-Signature=s3cr3tsig&versionId=7", host, p)
	}
	leaks := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q:\n%s", what, s, text)
			}
		}
	}

	out, errOut, err := runCmd(t, "image", "import", "-config", path, "os@1", signed(origin.Listener.Addr().String(), "/os.raw"))
	if err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, errOut)
	}
	leaks("the import's output", out+errOut)
	clean := "http://" + origin.Listener.Addr().String() + "/os.raw?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&versionId=7"
	removed := []string{"userinfo", "X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Signature"}

	// What anyone may read (api.anonymous_read), and what `imaged image show` prints.
	for _, p := range []string{"/api/v1/images", "/api/v1/images/os@1"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("anonymous GET %s: %s %s", p, resp.Status, b)
		}
		leaks("anonymous GET "+p, string(b))
	}
	out, _, err = runCmd(t, "image", "show", "-config", path, "os@1")
	var info struct {
		Image struct {
			Source        string
			SourceRemoved []string `json:"source_removed"`
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("show: %v %s", err, out)
	}
	leaks("imaged image show", out)
	if info.Image.Source != clean || strings.Join(info.Image.SourceRemoved, ",") != strings.Join(removed, ",") {
		t.Errorf("source %q, removed %q\nwant %q, %q", info.Image.Source, info.Image.SourceRemoved, clean, removed)
	}

	// Imports that fail, with the same credentials: refused, nothing listening, redirected to
	// another signed URL that fails.
	for i, src := range []string{
		signed(origin.Listener.Addr().String(), "/refused"),
		signed(closedAddr, "/os.raw"),
		signed(origin.Listener.Addr().String(), "/redirect"),
	} {
		out, errOut, err := runCmd(t, "image", "import", "-config", path, fmt.Sprintf("bad@%d", i), src)
		if err == nil {
			t.Fatalf("import of %s succeeded", src)
		}
		t.Logf("failed import: %v", err)
		leaks("a failed import's error", err.Error()+"\n"+out+errOut)
	}
	leaks("the daemon's log", logs.String())
}

// trickle serves random images that stop after their first 8 MiB until released: slow sources
// for imports to be killed in the middle of.
type trickle struct {
	*httptest.Server
	size    int
	mu      sync.Mutex
	release map[string]chan struct{}
}

func newTrickle(t *testing.T) *trickle {
	tr := &trickle{size: 32 << 20, release: map[string]chan struct{}{}}
	tr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No ranges: one stream, as a server that ignores Range sends (RFC 9110 §14.2).
		w.Header().Set("Content-Length", fmt.Sprint(tr.size))
		b := make([]byte, tr.size)
		rand.Read(b)
		w.Write(b[:8<<20])
		w.(http.Flusher).Flush()
		select {
		case <-tr.gate(r.URL.Path):
			w.Write(b[8<<20:])
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		tr.mu.Lock()
		for _, c := range tr.release {
			select {
			case <-c:
			default:
				close(c)
			}
		}
		tr.mu.Unlock()
		tr.Close()
	})
	return tr
}

func (tr *trickle) gate(path string) chan struct{} {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.release[path] == nil {
		tr.release[path] = make(chan struct{})
	}
	return tr.release[path]
}

// importProcess starts `imaged image import` as a child and waits until its temp file appears
// in tmp, which it returns.
func importProcess(t *testing.T, cfg, ref, src, tmp string) (*exec.Cmd, *lockedBuffer, string) {
	t.Helper()
	before := map[string]bool{}
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		before[e.Name()] = true
	}
	out := &lockedBuffer{}
	cmd := exec.Command(imagedBinary(t), "image", "import", "-config", cfg, ref, src)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir(tmp)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && !before[e.Name()] && fi.Size() > 0 {
				return cmd, out, filepath.Join(tmp, e.Name())
			}
		}
		time.Sleep(20 * time.Millisecond) // waiting for another process's file, not timing logic
	}
	t.Fatalf("import %s made no temp file in 30 s:\n%s", ref, out)
	return nil, nil, ""
}

// TestKilledImportLeavesNothing kills `imaged image import` processes in the middle of their
// download (SIGKILL: no deferred clean-up runs) and checks that the partial temp file each left
// is removed the next time the store is opened (any imaged image command) and when the daemon
// starts, while the temp file of an import still running beside it is left alone and that import
// completes.
func TestKilledImportLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := imageConfig(t, dir)
	tmp := filepath.Join(dir, "state", "images", "tmp")
	src := newTrickle(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	start := func() (stop func()) {
		d, err := newDaemon(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if c, ok := d.components["images"].(*catalog.Collector); !ok || c.Grace() != time.Hour {
			t.Errorf("the daemon's blob store collector: %+v", d.components["images"])
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			d.close()
		}
	}
	stop := start()
	killed, _, killedTmp := importProcess(t, path, "a@1", src.URL+"/a.raw", tmp)
	live, liveOut, liveTmp := importProcess(t, path, "b@1", src.URL+"/b.raw", tmp)
	killed.Process.Kill()
	killed.Wait()
	if _, err := os.Stat(killedTmp); err != nil {
		t.Fatalf("the killed import left nothing to clean (%v): the test proves nothing", err)
	}
	if out, _, err := runCmd(t, "image", "list", "-config", path); err != nil {
		t.Fatalf("list: %v %s", err, out)
	}
	if _, err := os.Stat(killedTmp); !os.IsNotExist(err) {
		t.Errorf("the killed import's temp file is still there after the store was opened: %v", err)
	}
	if _, err := os.Stat(liveTmp); err != nil {
		t.Errorf("the live import's temp file was touched: %v", err)
	}
	close(src.gate("/b.raw"))
	if err := live.Wait(); err != nil {
		t.Fatalf("the live import failed: %v\n%s", err, liveOut)
	}
	if out, _, err := runCmd(t, "image", "show", "-config", path, "b@1"); err != nil || !strings.Contains(out, `"size": 33554432`) {
		t.Errorf("show b@1: %v %s", err, out)
	}

	// Killed while the daemon is down: its start removes the file.
	stop()
	killed, _, killedTmp = importProcess(t, path, "c@1", src.URL+"/c.raw", tmp)
	killed.Process.Kill()
	killed.Wait()
	if _, err := os.Stat(killedTmp); err != nil {
		t.Fatalf("the killed import left nothing to clean (%v): the test proves nothing", err)
	}
	stop = start()
	defer stop()
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("tmp after the daemon started: %v", ents)
	}
}
