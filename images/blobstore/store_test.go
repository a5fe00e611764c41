package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
)

const bs = images.BlockSize

// image returns size pseudo-random bytes with the listed 512 KiB blocks zeroed.
func image(size int, seed uint64, zeroBlocks ...int) []byte {
	b := make([]byte, size)
	rnd := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		if i%8 == 0 {
			v := rnd.Uint64()
			for j := 0; j < 8 && i+j < len(b); j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	for _, z := range zeroBlocks {
		clear(b[min(size, z*bs):min(size, (z+1)*bs)])
	}
	return b
}

func builderManifest(t *testing.T, img []byte) *images.Manifest {
	t.Helper()
	bld := images.NewBuilder()
	bld.Write(img)
	m, err := bld.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t *testing.T, m *images.Manifest) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func open(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// files lists what a store directory holds under sub.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// oddReader returns bytes in uneven pieces, as decompressors do.
type oddReader struct {
	b []byte
	i int
}

func (r *oddReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	r.i++
	n := min(len(p), len(r.b), 1+(r.i*7919)%(300<<10))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// TestPipelineMatchesBuilder: the two-goroutine pipeline computes exactly what images.Builder
// computes, at every size around block and chunk edges, and stores the bytes unchanged.
func TestPipelineMatchesBuilder(t *testing.T) {
	s, _ := open(t)
	for i, size := range []int{1, 511, bs - 1, bs, bs + 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 777, 2*chunkSize + 5*bs} {
		img := image(size, uint64(i), 0, 2, 3, 9, 17, 18, 19, 20, 21, 22, 23, 24)
		var progress int64
		d, m, err := s.Import(t.Context(), &oddReader{b: img}, func(n int64) { progress += n })
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		want := builderManifest(t, img)
		if d != images.Digest(sha256.Sum256(img)) || !bytes.Equal(encode(t, m), encode(t, want)) {
			t.Fatalf("size %d: manifest differs from images.Builder's", size)
		}
		if progress != int64(size) {
			t.Errorf("size %d: progress reported %d bytes", size, progress)
		}
		f, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(got, img) {
			t.Fatalf("size %d: stored blob differs from the image", size)
		}
		stored, err := s.Manifest(d)
		if err != nil || !bytes.Equal(encode(t, stored), encode(t, want)) {
			t.Fatalf("size %d: stored manifest: %v", size, err)
		}
	}
}

// TestSparse: zero blocks are holes. A half-zero image takes about half its size on disk.
func TestSparse(t *testing.T) {
	s, dir := open(t)
	const size = 64 << 20
	var zeros []int
	for i := range size / bs {
		if i%2 == 1 {
			zeros = append(zeros, i)
		}
	}
	img := image(size, 1, zeros...)
	clear(img[size-4*bs:]) // trailing zeros: the file is extended by Truncate, not writes
	d, _, err := s.Import(t.Context(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "blobs", "sha256", d.Hex()), &st); err != nil {
		t.Fatal(err)
	}
	onDisk := st.Blocks * 512
	if st.Size != size || onDisk < size*4/10 || onDisk > size*6/10 {
		t.Fatalf("blob of %d bytes uses %d bytes on disk, want about half", st.Size, onDisk)
	}
}

func TestDedupeAndConcurrentImports(t *testing.T) {
	s, dir := open(t)
	img := image(3*chunkSize+12345, 3, 1, 5)
	var wg sync.WaitGroup
	digests := make([]images.Digest, 6)
	errs := make([]error, 6)
	for i := range digests {
		wg.Go(func() { digests[i], _, errs[i] = s.Import(t.Context(), &oddReader{b: img}, nil) })
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("import %d: %v, %s", i, errs[i], digests[i])
		}
	}
	if _, _, err := s.Import(t.Context(), bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	if b, m, tmp := files(t, dir, "blobs/sha256"), files(t, dir, "manifests/sha256"), files(t, dir, "tmp"); len(b) != 1 || len(m) != 1 || len(tmp) != 0 {
		t.Fatalf("blobs %v, manifests %v, tmp %v: want one of each, no temp files", b, m, tmp)
	}
	if l, err := s.List(); err != nil || len(l) != 1 || l[0] != digests[0] || !s.Has(digests[0]) {
		t.Fatalf("List = %v, %v", l, err)
	}
}

// failingReader yields n bytes of r, then err.
type failingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// TestImportLeavesNothing: a reader error (a truncated stream gives io.ErrUnexpectedEOF, which
// io.ReadFull would take for a short end) or a cancelled ctx leaves no blob, manifest or temp.
func TestImportLeavesNothing(t *testing.T) {
	img := image(5*chunkSize, 4)
	for _, tc := range []struct {
		name string
		err  error
		at   int64
	}{
		{"unexpected EOF mid-chunk", io.ErrUnexpectedEOF, chunkSize + 1000},
		{"unexpected EOF at a chunk edge", io.ErrUnexpectedEOF, 2 * chunkSize},
		{"I/O error", errors.New("disk on fire"), 3*chunkSize + 5},
		{"cancelled", context.Canceled, 2*chunkSize + 99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := open(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var r io.Reader = &failingReader{r: bytes.NewReader(img), n: tc.at, err: tc.err}
			if tc.err == context.Canceled {
				// Cancel, and keep yielding bytes: Import must stop on ctx alone.
				r = io.MultiReader(io.LimitReader(bytes.NewReader(img), tc.at),
					readerFunc(func(p []byte) (int, error) { cancel(); return copy(p, img), nil }))
			}
			_, _, err := s.Import(ctx, r, nil)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			for _, sub := range []string{"blobs/sha256", "manifests/sha256", "tmp"} {
				if f := files(t, dir, sub); len(f) != 0 {
					t.Errorf("%s holds %v", sub, f)
				}
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		s, _ := open(t)
		if _, _, err := s.Import(t.Context(), bytes.NewReader(nil), nil); err == nil {
			t.Fatal("an empty image was imported")
		}
	})
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestVerify: one flipped byte names its block; a cut blob names every block it lost.
func TestVerify(t *testing.T) {
	s, dir := open(t)
	img := image(10*bs+300, 5, 2, 7)
	d, _, err := s.Import(t.Context(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(t.Context(), d)
	if err != nil || !rep.OK() || rep.Blocks != 11 {
		t.Fatalf("clean blob: %+v, %v", rep, err)
	}
	path := filepath.Join(dir, "blobs", "sha256", d.Hex())
	// The blob is read-only to its readers; a disk's bit flip is not.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{3*bs + 17, 7*bs + bs/2} { // a data block, a hole
		var b [1]byte
		f.ReadAt(b[:], off)
		b[0] ^= 0x40
		f.WriteAt(b[:], off)
	}
	f.Close()
	rep, err = s.Verify(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.DigestOK || len(rep.Corrupt) != 2 || rep.Corrupt[0] != 3 || rep.Corrupt[1] != 7 {
		t.Fatalf("flipped bytes in blocks 3 and 7: %+v", rep)
	}
	if err := os.Truncate(path, 8*bs+5); err != nil {
		t.Fatal(err)
	}
	rep, err = s.Verify(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Size != 8*bs+5 || len(rep.Corrupt) != 5 || rep.Corrupt[2] != 8 || rep.Corrupt[4] != 10 {
		t.Fatalf("cut blob: %+v", rep)
	}
	// Importing the image again repairs the blob.
	if _, _, err := s.Import(t.Context(), bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	if rep, err = s.Verify(t.Context(), d); err != nil || !rep.OK() {
		t.Fatalf("after re-import: %+v, %v", rep, err)
	}
}

func TestGCAndDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	img := image(bs+1, 6)
	d, _, err := s.Import(t.Context(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * StrayBlobAge)
	write := func(p string, mtime time.Time) {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	orphan := images.Digest(sha256.Sum256([]byte("orphan")))
	fresh := images.Digest(sha256.Sum256([]byte("fresh")))
	// Temp files: a dead import's, just written and old, and a live import's, locked, old.
	write(filepath.Join(dir, "tmp", "import-dead-old"), old)
	write(filepath.Join(dir, "tmp", "import-dead-fresh"), time.Now())
	live, err := s.createTemp("import-*")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	os.Chtimes(live.Name(), old, old)
	// Blobs without a manifest: old, and just renamed in by an import that writes its manifest next.
	write(filepath.Join(dir, "blobs", "sha256", orphan.Hex()), old)
	write(filepath.Join(dir, "blobs", "sha256", fresh.Hex()), time.Now())
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if tmp, blobs := files(t, dir, "tmp"), files(t, dir, "blobs/sha256"); len(tmp) != 1 || tmp[0] != filepath.Base(live.Name()) ||
		len(blobs) != 2 || !slices.Contains(blobs, d.Hex()) || !slices.Contains(blobs, fresh.Hex()) {
		t.Fatalf("after GC: tmp %v, blobs %v", tmp, blobs)
	}
	live.Close()
	if n, err := s.GC(StrayBlobAge); err != nil || n != 1 || len(files(t, dir, "tmp")) != 0 {
		t.Fatalf("GC once the import is gone: %d removed, %v; tmp %v", n, err, files(t, dir, "tmp"))
	}
	os.Remove(filepath.Join(dir, "blobs", "sha256", fresh.Hex()))
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) || len(files(t, dir, "blobs/sha256")) != 0 || len(files(t, dir, "manifests/sha256")) != 0 {
		t.Fatal("Delete left files")
	}
	if _, err := s.Open(d); !errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open after Delete: %v", err)
	}
	if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
}

// TestTempLockRace: a sweep running while imports create their temp files never removes one an
// import got (createTemp re-checks its file after locking it).
func TestTempLockRace(t *testing.T) {
	s, _ := open(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := s.removeStale(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 2000 {
		f, err := s.createTemp("import-*")
		if err != nil {
			t.Fatal(err)
		}
		mine, _ := f.Stat()
		there, err := os.Lstat(f.Name())
		if err != nil || !os.SameFile(mine, there) {
			t.Fatalf("a sweep took %s from the import that created it: %v", f.Name(), err)
		}
		os.Remove(f.Name())
		f.Close()
	}
}
