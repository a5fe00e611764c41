package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
)

// Import end to end: every format, through the blob store.

func storeFiles(t *testing.T, dir string) (n int, names []string) {
	t.Helper()
	for _, sub := range []string{"blobs/sha256", "manifests/sha256", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			names = append(names, sub+"/"+e.Name())
		}
	}
	return len(names), names
}

func TestImportEveryFormat(t *testing.T) {
	needQemuImg(t)
	raw, list := fixtures(t)
	dir := t.TempDir()
	store, err := blobstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	bld := images.NewBuilder()
	bld.Write(raw)
	want, err := bld.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	wantEnc, _ := want.MarshalBinary()
	for _, f := range list {
		if !bytes.Equal(f.want, raw) {
			continue // the qemu-io fixture is another image
		}
		t.Run(f.name, func(t *testing.T) {
			src, err := Open(t.Context(), f.path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			d, m, err := store.Import(t.Context(), src.Raw(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if d != images.Digest(sha256.Sum256(raw)) {
				t.Fatalf("digest %s, want the SHA-256 of the raw image", d)
			}
			enc, _ := m.MarshalBinary()
			if !bytes.Equal(enc, wantEnc) {
				t.Fatal("manifest differs from an images.Builder over the raw bytes")
			}
		})
	}
	// Eleven formats of one image: one blob, one manifest, nothing in tmp.
	if n, names := storeFiles(t, dir); n != 2 {
		t.Fatalf("store holds %v, want one blob and one manifest", names)
	}
}

// TestImportTruncated: a cut gzip or qcow2 fails the import and leaves nothing in the store.
func TestImportTruncated(t *testing.T) {
	needQemuImg(t)
	_, list := fixtures(t)
	for _, f := range list {
		if f.name != "raw.gz" && f.name != "v3.qcow2" && f.name != "zlib.qcow2" {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			b, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "cut-"+filepath.Base(f.path))
			os.WriteFile(p, b[:len(b)*2/3], 0o644)
			dir := t.TempDir()
			store, err := blobstore.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			src, err := Open(t.Context(), p, Options{})
			if err == nil {
				defer src.Close()
				_, _, err = store.Import(t.Context(), src.Raw(), nil)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if n, names := storeFiles(t, dir); n != 0 {
				t.Fatalf("store holds %v after a failed import", names)
			}
		})
	}
}

// TestImportCancelled: cancelling mid-import over HTTP stops it and leaves nothing.
func TestImportCancelled(t *testing.T) {
	needQemuImg(t)
	qcow := fixtureBytes(t, "v3.qcow2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var served int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served++; served == 4 {
			cancel() // mid-import: the header, tables and a first data range are read
			time.Sleep(50 * time.Millisecond)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(qcow))
	}))
	defer srv.Close()
	dir := t.TempDir()
	store, err := blobstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	src, err := Open(ctx, srv.URL+"/disk.qcow2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, _, err = store.Import(ctx, src.Raw(), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n, names := storeFiles(t, dir); n != 0 {
		t.Fatalf("store holds %v after a cancelled import", names)
	}
}

// BenchmarkImport: `imaged image import` of a half-zero image (every other 4 MiB is zeros),
// from a raw file and from the qcow2 qemu-img makes of it, fsync included. The size is
// IMAGED_BENCH_MIB (default 256):
//
//	IMAGED_BENCH_MIB=1024 go test -run X -bench Import -benchtime 3x ./images/convert
func BenchmarkImport(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("IMAGED_BENCH_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n << 20
	}
	dir := b.TempDir()
	rawPath := filepath.Join(dir, "disk.raw")
	f, err := os.Create(rawPath)
	if err != nil {
		b.Fatal(err)
	}
	data := testImage(4<<20, 3)
	for i := range data { // no zero runs inside the data half
		data[i] |= 1
	}
	for off := int64(0); off < size; off += 8 << 20 {
		f.WriteAt(data[:min(int64(len(data)), size-off)], off)
	}
	f.Truncate(size)
	f.Close()
	paths := map[string]string{"raw": rawPath}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		paths["qcow2"] = filepath.Join(dir, "disk.qcow2")
		if err := run(dir, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", rawPath, paths["qcow2"]); err != nil {
			b.Fatal(err)
		}
	}
	for _, name := range []string{"raw", "qcow2"} {
		p, ok := paths[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			cpu0, t0 := cpuTime(), time.Now()
			defer func() {
				// cores: CPU time (user+system, this process) over wall time.
				b.ReportMetric((cpuTime()-cpu0).Seconds()/time.Since(t0).Seconds(), "cores")
			}()
			for b.Loop() {
				store, err := blobstore.Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				src, err := Open(b.Context(), p, Options{})
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := store.Import(b.Context(), src.Raw(), nil); err != nil {
					b.Fatal(err)
				}
				src.Close()
			}
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
