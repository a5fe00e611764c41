package imagehttp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
)

func setup(t *testing.T) (*httptest.Server, images.Digest, []byte, []byte) {
	t.Helper()
	s, err := blobstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 3*images.BlockSize+1234)
	rand.Read(img)
	clear(img[images.BlockSize : 2*images.BlockSize])
	d, m, err := s.Import(t.Context(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(s, nil))
	t.Cleanup(srv.Close)
	return srv, d, img, enc
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestBlob(t *testing.T) {
	srv, d, img, _ := setup(t)
	url := srv.URL + "/images/" + d.String() + "/blob"
	etag := `"` + d.String() + `"`

	resp, body := do(t, "GET", url)
	if resp.StatusCode != 200 || !bytes.Equal(body, img) {
		t.Fatalf("GET: %s, %d bytes", resp.Status, len(body))
	}
	for k, want := range map[string]string{
		"ETag":           etag,
		"Content-Type":   "application/octet-stream",
		"Content-Length": fmt.Sprint(len(img)),
		"Cache-Control":  "public, max-age=31536000, immutable",
		"Accept-Ranges":  "bytes",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	// The digest without its prefix names the same image.
	if resp, _ := do(t, "HEAD", srv.URL+"/images/"+d.Hex()+"/blob"); resp.StatusCode != 200 {
		t.Errorf("bare hex: %s", resp.Status)
	}

	resp, body = do(t, "HEAD", url)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(img)) || resp.Header.Get("ETag") != etag {
		t.Errorf("HEAD: %s, body %d, length %d", resp.Status, len(body), resp.ContentLength)
	}

	lo, hi := int64(images.BlockSize-10), int64(2*images.BlockSize+9)
	rng := fmt.Sprintf("bytes=%d-%d", lo, hi)
	resp, body = do(t, "GET", url, "Range", rng)
	if resp.StatusCode != 206 || !bytes.Equal(body, img[lo:hi+1]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", lo, hi, len(img)) {
		t.Errorf("Range: %s, %q, %d bytes", resp.Status, resp.Header.Get("Content-Range"), len(body))
	}

	// If-Range with the current ETag: the range. With another (the image changed, as far as
	// the client knows): the whole image.
	resp, body = do(t, "GET", url, "Range", rng, "If-Range", etag)
	if resp.StatusCode != 206 || !bytes.Equal(body, img[lo:hi+1]) {
		t.Errorf("If-Range right ETag: %s, %d bytes", resp.Status, len(body))
	}
	resp, body = do(t, "GET", url, "Range", rng, "If-Range", `"sha256:`+fmt.Sprintf("%064x", 1)+`"`)
	if resp.StatusCode != 200 || !bytes.Equal(body, img) {
		t.Errorf("If-Range wrong ETag: %s, %d bytes", resp.Status, len(body))
	}

	if resp, _ := do(t, "GET", url, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %s", resp.Status)
	}
	if resp, _ := do(t, "GET", url, "Range", fmt.Sprintf("bytes=%d-", len(img)+10)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %s", resp.Status)
	}
	if resp, _ := do(t, "POST", url); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
}

func TestManifest(t *testing.T) {
	srv, d, _, enc := setup(t)
	resp, body := do(t, "GET", srv.URL+"/images/"+d.String()+"/manifest")
	if resp.StatusCode != 200 || !bytes.Equal(body, enc) {
		t.Fatalf("GET manifest: %s, %d bytes", resp.Status, len(body))
	}
	h := images.Digest(sha256.Sum256(enc))
	if resp.Header.Get("ETag") != `"`+h.String()+`"` || resp.Header.Get("Content-Type") != ManifestType {
		t.Errorf("ETag %q (want the manifest hash %s), Content-Type %q", resp.Header.Get("ETag"), h, resp.Header.Get("Content-Type"))
	}
	var m images.Manifest
	if err := m.UnmarshalBinary(body); err != nil || m.Digest != d {
		t.Errorf("served manifest: %v, digest %s", err, m.Digest)
	}
	resp, body = do(t, "GET", srv.URL+"/images/"+d.String()+"/manifest", "Range", "bytes=0-7")
	if resp.StatusCode != 206 || string(body) != "IMGMNFST" {
		t.Errorf("manifest range: %s %q", resp.Status, body)
	}
}

func TestErrors(t *testing.T) {
	srv, _, _, _ := setup(t)
	unknown := images.Digest(sha256.Sum256([]byte("nothing")))
	for _, c := range []struct {
		path string
		code int
	}{
		{"/images/" + unknown.String() + "/blob", 404},
		{"/images/" + unknown.String() + "/manifest", 404},
		{"/images/sha256:abc/blob", 400},
		{"/images/" + unknown.Hex() + "zz/manifest", 400},
		{"/images/md5:" + unknown.Hex() + "/blob", 400},
	} {
		resp, body := do(t, "GET", srv.URL+c.path)
		var msg map[string]string
		if resp.StatusCode != c.code || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &msg) != nil || msg["error"] == "" {
			t.Errorf("%s: %s %q %s", c.path, resp.Status, resp.Header.Get("Content-Type"), body)
		}
		if resp.Header.Get("ETag") != "" || resp.Header.Get("Cache-Control") == "public, max-age=31536000, immutable" {
			t.Errorf("%s: an error must not be cached as the image", c.path)
		}
	}
}

// readFromRecorder is a ResponseWriter with ReadFrom, as net/http's is: the handler must hand
// it the *os.File (inside ServeContent's io.LimitedReader), which the server sends with
// sendfile(2).
type readFromRecorder struct {
	*httptest.ResponseRecorder
	src io.Reader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.src = src
	return io.Copy(r.ResponseRecorder, src)
}

func TestSendfilePath(t *testing.T) {
	s, err := blobstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, images.BlockSize+1)
	rand.Read(img)
	d, _, err := s.Import(t.Context(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, rng := range []string{"", "bytes=100-5000"} {
		w := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		req := httptest.NewRequest("GET", "/images/"+d.String()+"/blob", nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		Handler(s, nil).ServeHTTP(w, req)
		lr, ok := w.src.(*io.LimitedReader)
		if !ok {
			t.Fatalf("Range %q: ReadFrom got %T, want *io.LimitedReader", rng, w.src)
		}
		if _, ok := lr.R.(*os.File); !ok {
			t.Fatalf("Range %q: ReadFrom got a LimitedReader of %T, want *os.File", rng, lr.R)
		}
	}
}

type brokenStore struct{}

func (brokenStore) Open(images.Digest) (*os.File, error) {
	return nil, errors.New("open /var/lib/imaged/images/blobs/x: input/output error")
}
func (brokenStore) OpenManifest(images.Digest) (*os.File, images.Hash, error) {
	return nil, images.Hash{}, errors.New("open /var/lib/imaged/images/manifests/x: input/output error")
}

func TestInternalErrorsNotEchoed(t *testing.T) {
	h := Handler(brokenStore{}, nil)
	for _, kind := range []string{"blob", "manifest"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/images/"+strings.Repeat("ab", 32)+"/"+kind, nil))
		if w.Code != 500 || strings.Contains(w.Body.String(), "/var/lib") || !strings.Contains(w.Body.String(), "server log") {
			t.Errorf("%s: %d %s", kind, w.Code, w.Body)
		}
	}
}
