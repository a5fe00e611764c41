package convert

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzS3Headers feeds the S3 import source the headers of HeadObject's answer (status,
// Content-Length, ETag, Last-Modified) and of GetObject's (Content-Range, ETag; or a store that
// ignores Range and answers 200 with the whole object), through the real SDK against a fake S3
// on loopback. Whatever the store says: no panic, a clear error or an import whose size is what
// HeadObject said and whose every byte, read in order or at random offsets, is the object's at
// that offset.
//
//	go test -run=NONE -fuzz='^FuzzS3Headers$' -fuzztime=60s -fuzzminimizetime=5s ./images/convert/
func FuzzS3Headers(f *testing.F) {
	const etag = `"5d41402abc4b2a76b9719d911017c592"`
	for _, s := range []struct {
		status                                uint16
		contentLength, headETag, lastModified string
		getContentRange, getETag              string
		ignoreRange                           bool
	}{
		{200, "24000", etag, "Tue, 14 Nov 2023 22:13:20 GMT", "", "", false},
		{200, "23000", etag, "", "", "", false},
		{200, "24000", `W/"weak"`, "", "", "", false},
		{200, "24000", etag, "yesterday", "", "", false},
		{200, "24000", etag, "", "bytes 1-4096/24000", "", false},
		{200, "24000", etag, "", "", `"other"`, false},
		{200, "0", "", "", "", "", false},
		{403, "", "", "", "", "", false},
		{404, "", "", "", "", "", false},
		{412, "", "", "", "", "", false},
	} {
		f.Add(s.status, s.contentLength, s.headETag, s.lastModified, s.getContentRange, s.getETag, s.ignoreRange)
	}
	// The SDK's default chain, from the environment only, one attempt per call.
	f.Setenv("AWS_ACCESS_KEY_ID", "AKIDIMAGEDFUZZ")
	f.Setenv("AWS_SECRET_ACCESS_KEY", "fuzz-secret-key")
	f.Setenv("AWS_CONFIG_FILE", filepath.Join(f.TempDir(), "none"))
	f.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(f.TempDir(), "none"))
	f.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	f.Setenv("AWS_MAX_ATTEMPTS", "1")
	f.Fuzz(func(t *testing.T, status uint16, contentLength, headETag, lastModified, getContentRange, getETag string, ignoreRange bool) {
		code := int(status)
		if code < 200 || code > 599 {
			code = 200 + code%400
		}
		for _, v := range []string{contentLength, headETag, lastModified, getContentRange, getETag} {
			if strings.ContainsAny(v, "\r\n") || !validHeaderValue(v) {
				return // no server can send it; net/http would not either
			}
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/images/fuzz.raw" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			if r.Method == http.MethodHead {
				for k, v := range map[string]string{"Content-Length": contentLength, "ETag": headETag, "Last-Modified": lastModified} {
					if v != "" {
						w.Header().Set(k, v)
					}
				}
				w.WriteHeader(code)
				return
			}
			w.Header().Set("ETag", etag)
			if im := r.Header.Get("If-Match"); im != "" && im != etag {
				w.WriteHeader(http.StatusPreconditionFailed)
				return
			}
			if ignoreRange {
				r.Header.Del("Range")
			}
			rec := httptest.NewRecorder()
			rec.Header().Set("ETag", etag)
			http.ServeContent(rec, r, "", time.Time{}, bytes.NewReader(fuzzObject))
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			for k, v := range map[string]string{"Content-Range": getContentRange, "ETag": getETag} {
				if v != "" {
					w.Header().Set(k, v)
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		opt := Options{S3Endpoint: srv.URL, S3Region: "eu-lab-1"}
		// Random access, as qcow2, VHD and VHDX tables and data are read.
		if b, err := openS3(ctx, "s3://images/fuzz.raw", opt); err == nil {
			for _, off := range []int64{5000, 0, b.size() - 100, 9000} {
				p := make([]byte, 100)
				k, err := b.readerAt().ReadAt(p, off)
				if k > 0 && (off < 0 || off+int64(k) > int64(len(fuzzObject)) || !bytes.Equal(p[:k], fuzzObject[off:off+int64(k)])) {
					t.Fatalf("ReadAt(%d) gave %d bytes (err %v) that are not the object's there", off, k, err)
				}
			}
		}
		s, err := Open(ctx, "s3://images/fuzz.raw", opt)
		if err != nil {
			if strings.Contains(err.Error(), "fuzz-secret-key") {
				t.Fatalf("the error shows the secret key: %v", err)
			}
			return
		}
		defer s.Close()
		var got bytes.Buffer
		_, err = io.Copy(&got, io.LimitReader(s.Raw(), int64(2*len(fuzzObject))))
		if s.Format == Raw && !bytes.Equal(got.Bytes(), fuzzObject[:min(got.Len(), len(fuzzObject))]) {
			t.Fatalf("%d bytes read (err %v), not the object's: %s", got.Len(), err, firstDiff(got.Bytes(), fuzzObject))
		}
		if err == nil && s.Format == Raw && int64(got.Len()) != s.InputSize {
			t.Fatalf("%d bytes read, HeadObject said %d", got.Len(), s.InputSize)
		}
	})
}

// validHeaderValue reports whether v may be a header value on the wire (RFC 9110 §5.5: visible
// characters, spaces and tabs, obs-text).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
