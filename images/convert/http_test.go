package convert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fileServer serves files by name with http.ServeContent (Range, If-Match, If-Range) and a
// strong ETag, or, with noRanges, as plain 200 bodies the way a server without range support
// does. It counts requests.
type fileServer struct {
	mu       sync.Mutex
	files    map[string][]byte
	etags    map[string]string
	noRanges bool
	requests atomic.Int64
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	b, ok := s.files[path.Base(r.URL.Path)]
	etag := s.etags[path.Base(r.URL.Path)]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if s.noRanges {
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
		return
	}
	w.Header().Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

func (s *fileServer) put(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files, s.etags = map[string][]byte{}, map[string]string{}
	}
	s.files[name] = b
	s.etags[name] = fmt.Sprintf(`"v%d"`, len(s.etags)+1)
}

func TestHTTP(t *testing.T) {
	needQemuImg(t)
	_, list := fixtures(t)
	fs := &fileServer{}
	byName := map[string]fixture{}
	for _, f := range list {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		fs.put(path.Base(f.path), b)
		byName[f.name] = f
	}
	srv := httptest.NewServer(fs)
	defer srv.Close()

	for _, name := range []string{"raw", "raw.gz", "v3.qcow2", "zlib.qcow2", "dynamic.vhd", "fixed.vhd", "dynamic-1m.vhdx"} {
		t.Run(name, func(t *testing.T) {
			f := byName[name]
			fs.requests.Store(0)
			openFixture(t, srv.URL+"/"+path.Base(f.path), Options{}, f)
			// Read-ahead windows and large data reads: a few requests per MiB at most, not one
			// per cluster (this image has ~100 64 KiB clusters).
			if n := fs.requests.Load(); n > 20 {
				t.Errorf("%d requests for a %d-byte image", n, len(f.want))
			}
		})
	}

	t.Run("no ranges", func(t *testing.T) {
		vhd, _ := os.ReadFile(byName["fixed.vhd"].path)
		fs.put("fixedvhd", vhd) // no extension: only the footer can tell
		nr := &fileServer{noRanges: true, files: fs.files, etags: fs.etags}
		srv := httptest.NewServer(nr)
		defer srv.Close()
		for _, name := range []string{"raw", "raw.xz"} {
			s, err := Open(t.Context(), srv.URL+"/"+path.Base(byName[name].path), Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(t, s)
			s.Close()
			if err != nil || !bytes.Equal(got, byName[name].want) {
				t.Fatalf("%s: err %v, equal %v", name, err, bytes.Equal(got, byName[name].want))
			}
		}
		// Containers need random access; a fixed VHD streamed is caught by its footer, and the
		// error says what would work (ranges), not to import the .vhd (which was done).
		for name, want := range map[string]error{"v3.qcow2": ErrNoRanges, "fixedvhd": ErrUnsupported} {
			s, err := Open(t.Context(), srv.URL+"/"+name, Options{})
			if err == nil {
				_, err = readAll(t, s)
				s.Close()
			}
			if !errors.Is(err, want) || !errors.Is(err, ErrNoRanges) || !strings.Contains(err.Error(), "range requests") {
				t.Errorf("%s without ranges: %v, want %v and ErrNoRanges, naming range requests", name, err, want)
			}
		}
	})

	t.Run("changed while read", func(t *testing.T) {
		f := byName["v3.qcow2"]
		b, _ := os.ReadFile(f.path)
		fs.put("moving.qcow2", b)
		s, err := Open(t.Context(), srv.URL+"/moving.qcow2", Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fs.put("moving.qcow2", b) // same bytes, new ETag: a replaced object
		if _, err := readAll(t, s); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "changed") {
			t.Fatalf("err = %v, want ErrCorrupt: changed", err)
		}
	})

	t.Run("not found", func(t *testing.T) {
		if _, err := Open(t.Context(), srv.URL+"/nope.qcow2", Options{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("truncated body", func(t *testing.T) {
		// A server that promises more than it sends: the client sees the short body.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(byName["raw"].want)))
			io.CopyN(w, bytes.NewReader(byName["raw"].want), 1<<20)
		}))
		defer srv.Close()
		s, err := Open(t.Context(), srv.URL+"/disk", Options{})
		if err == nil {
			_, err = readAll(t, s)
			s.Close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}
