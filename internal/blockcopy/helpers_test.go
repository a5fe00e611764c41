package blockcopy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
)

const bs = images.BlockSize

// testImage builds an image from a pattern, one letter a block: 'D' random data, 'Z' zeros;
// tail bytes are cut off the last block (so the image ends unaligned).
func testImage(t testing.TB, pattern string, tail int, seed uint64) ([]byte, *images.Manifest) {
	t.Helper()
	img := make([]byte, len(pattern)*bs)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	for i, c := range pattern {
		if c == 'D' {
			r.Read(img[i*bs : (i+1)*bs])
		}
	}
	img = img[:len(img)-tail]
	return img, manifestOf(t, img)
}

func manifestOf(t testing.TB, img []byte) *images.Manifest {
	t.Helper()
	b := images.NewBuilder()
	b.Write(img)
	m, err := b.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type reqRec struct {
	off, n int64
}

// blobServer serves a blob over loopback as imaged does (http.ServeContent, strong ETag), and
// records every range asked. hook, if set, may answer a request itself (return true).
type blobServer struct {
	*httptest.Server
	blob []byte
	etag string

	mu    sync.Mutex
	reqs  []reqRec
	conns map[string]bool // client addresses seen
	hook  func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool
}

func newBlobServer(t testing.TB, blob []byte) *blobServer {
	s := &blobServer{blob: blob, etag: fmt.Sprintf(`"sha256:%x"`, sha256.Sum256(blob))}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	var rr reqRec
	var a, b int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err == nil {
		rr = reqRec{a, b - a + 1}
	}
	s.mu.Lock()
	i := len(s.reqs)
	s.reqs = append(s.reqs, rr)
	if s.conns == nil {
		s.conns = map[string]bool{}
	}
	s.conns[r.RemoteAddr] = true
	hook := s.hook
	s.mu.Unlock()
	if hook != nil && hook(w, r, i, rr) {
		return
	}
	w.Header().Set("ETag", s.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.blob))
}

func (s *blobServer) requests() []reqRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]reqRec(nil), s.reqs...)
}

func (s *blobServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *blobServer) source(t testing.TB) *HTTPSource {
	u, err := url.Parse(s.URL + "/images/x/blob")
	if err != nil {
		t.Fatal(err)
	}
	return &HTTPSource{URL: u, ETag: s.etag, Client: NewClient(), Stall: 5 * time.Second}
}

// fileTarget is a file in the test's temp dir holding init (nil: a new, empty file).
func fileTarget(t testing.TB, init []byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "disk"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if init != nil {
		if _, err := f.WriteAt(init, 0); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func readAll(t testing.TB, r io.ReaderAt, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func garbage(n int) []byte { return bytes.Repeat([]byte{0xAA}, n) }

// checkImage fails unless the target's first len(img) bytes are the image.
func checkImage(t testing.TB, r io.ReaderAt, img []byte, m *images.Manifest) {
	t.Helper()
	got := readAll(t, r, int64(len(img)))
	if sha256.Sum256(got) != m.Digest {
		for i := range m.Blocks {
			o, l := m.Offset(i), m.Len(i)
			if !bytes.Equal(got[o:o+l], img[o:o+l]) {
				t.Errorf("target block %d differs from the image", i)
			}
		}
		t.Fatalf("target digest is not the image's %s", m.Digest)
	}
}

// memTarget is an in-memory Target that counts its writes.
type memTarget struct {
	mu     sync.Mutex
	b      []byte
	writes []reqRec
	syncs  int
}

func (m *memTarget) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	m.writes = append(m.writes, reqRec{off, int64(len(p))})
	return len(p), nil
}

func (m *memTarget) Sync() error {
	m.mu.Lock()
	m.syncs++
	m.mu.Unlock()
	return nil
}

// memSource serves an image from memory; fail, if set, may fail an OpenRange.
type memSource struct {
	img  []byte
	mu   sync.Mutex
	reqs []reqRec
	at   []time.Time
	fail func(i int, off, n int64) error
	cut  int64 // if > 0, the image ends here: ranges past it are cut short (io.EOF)
}

func (s *memSource) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	i := len(s.reqs)
	s.reqs = append(s.reqs, reqRec{off, n})
	s.at = append(s.at, time.Now())
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if err := fail(i, off, n); err != nil {
			return nil, err
		}
	}
	if s.cut > 0 && off+n > s.cut {
		n = max(0, s.cut-off)
	}
	return io.NopCloser(bytes.NewReader(s.img[off : off+n])), nil
}

// blockOf is the block a request starts at.
func blockOf(r reqRec) int { return int(r.off / bs) }

var ctxb = context.Background()
