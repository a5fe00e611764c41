package convert

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeS3 speaks the part of the S3 REST API an import uses, path-style (/bucket/key):
// HeadObject and GetObject with Range and If-Match. It refuses requests that are not SigV4
// signed for its access key and region, and answers errors in S3's XML.
type fakeS3 struct {
	region  string
	akid    string
	objects map[string][]byte // "bucket/key"
	gets    atomic.Int64
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Authorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/region/s3/aws4_request,
	// SignedHeaders=…, Signature=…
	auth := r.Header.Get("Authorization")
	scope := fmt.Sprintf("Credential=%s/%s/%s/s3/aws4_request", f.akid, time.Now().UTC().Format("20060102"), f.region)
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") || !strings.Contains(auth, scope) || !strings.Contains(auth, "Signature=") ||
		r.Header.Get("X-Amz-Date") == "" || r.Header.Get("X-Amz-Content-Sha256") == "" {
		f.fail(w, r, http.StatusForbidden, "SignatureDoesNotMatch")
		return
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	b, ok := f.objects[key]
	if !ok {
		f.fail(w, r, http.StatusNotFound, "NoSuchKey")
		return
	}
	sum := md5.Sum(b)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	w.Header().Set("Last-Modified", time.Unix(1700000000, 0).UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "binary/octet-stream")
	switch r.Method {
	case http.MethodHead, http.MethodGet:
		if r.Method == http.MethodGet {
			f.gets.Add(1)
		}
		if im := r.Header.Get("If-Match"); im != "" && im != w.Header().Get("ETag") {
			f.fail(w, r, http.StatusPreconditionFailed, "PreconditionFailed")
			return
		}
		// Range, 206 and Content-Range as S3 answers them.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		f.fail(w, r, http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
}

func (f *fakeS3) fail(w http.ResponseWriter, r *http.Request, code int, s3code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(code)
	if r.Method != http.MethodHead { // HEAD errors have no body: the SDK maps the status
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>1</RequestId></Error>`, s3code, s3code, r.URL.Path)
	}
}

func TestS3(t *testing.T) {
	needQemuImg(t)
	_, list := fixtures(t)
	fake := &fakeS3{region: "eu-lab-1", akid: "AKIDIMAGEDTEST", objects: map[string][]byte{}}
	byName := map[string]fixture{}
	for _, f := range list {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		fake.objects["images/win/"+filepath.Base(f.path)] = b
		byName[f.name] = f
	}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	// The SDK's default chain, from the environment only.
	t.Setenv("AWS_ACCESS_KEY_ID", fake.akid)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	opt := Options{S3Endpoint: srv.URL, S3Region: fake.region}

	for _, name := range []string{"raw.zst", "v3.qcow2", "dynamic.vhdx", "fixed.vhd"} {
		t.Run(name, func(t *testing.T) {
			f := byName[name]
			fake.gets.Store(0)
			openFixture(t, "s3://images/win/"+filepath.Base(f.path), opt, f)
			if n := fake.gets.Load(); n > 20 {
				t.Errorf("%d GetObject requests", n)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		_, err := Open(t.Context(), "s3://images/win/nope.qcow2", opt)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("wrong region is refused by the fake", func(t *testing.T) {
		o := opt
		o.S3Region = "us-west-2"
		_, err := Open(t.Context(), "s3://images/win/"+filepath.Base(byName["raw"].path), o)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
}
