package convert

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzHTTPHeaders feeds the HTTP import source the headers of the server's first answer (status,
// Content-Range, Content-Length, ETag, Last-Modified, Location) and the Content-Range of its
// ranged answers, written on the wire and parsed by net/http as a real answer would be; the
// client is the default one with an in-process transport (nothing is dialled). Whatever the
// server says: no panic, no allocation sized by a header, never from https down to http, the URL's password only to its own host and scheme, and every byte an
// import yields is the object's byte at that offset, and no error shows the URL's password or
// query (a presigned URL's signature).
//
//	go test -run=NONE -fuzz='^FuzzHTTPHeaders$' -fuzztime=60s -fuzzminimizetime=5s ./images/convert/
func FuzzHTTPHeaders(f *testing.F) {
	type seed struct {
		secure                                                    bool
		status                                                    uint16
		contentRange, contentLength, etag, lastModified, location string
		rangeCR                                                   string
	}
	n := len(fuzzObject)
	for _, s := range []seed{
		{true, 206, fmt.Sprintf("bytes 0-4095/%d", n), "4096", `"v1"`, "Tue, 14 Nov 2023 22:13:20 GMT", "", ""},
		{false, 206, fmt.Sprintf("bytes 0-4095/%d", n), "4096", `W/"v1"`, "", "", ""},
		{false, 206, "bytes 0-4095/*", "4096", "", "", "", ""},
		{false, 206, fmt.Sprintf("bytes 0-4095/%d", n-1000), "4096", `"v1"`, "", "", ""},
		{false, 206, fmt.Sprintf("bytes 0-4095/%d", n), "4096", `"v1"`, "", "", fmt.Sprintf("bytes 1-4096/%d", n)},
		{false, 200, "", fmt.Sprint(n), `"v1"`, "", "", ""},
		{false, 200, "", "", "", "", "", ""},
		{true, 302, "", "0", "", "", "https://imaged.test/moved.raw", ""},
		{true, 307, "", "0", "", "", "https://mirror.test/img.raw", ""},
		{false, 301, "", "0", "", "", "/img.raw", ""},
		{false, 416, "bytes */0", "0", "", "", "", ""},
		{false, 404, "", "9", "", "", "", ""},
	} {
		f.Add(s.secure, s.status, s.contentRange, s.contentLength, s.etag, s.lastModified, s.location, s.rangeCR)
	}
	f.Fuzz(func(t *testing.T, secure bool, status uint16, contentRange, contentLength, etag, lastModified, location, rangeCR string) {
		code := int(status)
		if code < 100 || code > 599 {
			code = 200 + code%400
		}
		src := "http://importer:Pw-5ecret@imaged.test/img.raw?X-Amz-Signature=Sig-5ecret"
		if secure {
			src = "https" + strings.TrimPrefix(src, "http")
		}
		// An error names the source without its secrets (they reach logs and API answers),
		// unless the server echoed them in a header the message quotes.
		leaks := func(err error) bool {
			echoed := strings.Contains(contentRange+contentLength+etag+lastModified+location+rangeCR, "5ecret")
			return err != nil && strings.Contains(err.Error(), "5ecret") && !echoed
		}
		first := true
		serve := func(r *http.Request) (*http.Response, error) {
			// As net/http's Transport answers a redirect to another scheme or to no host:
			// nothing is sent.
			if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
				return nil, fmt.Errorf("unsupported protocol scheme %q", r.URL.Scheme)
			}
			if r.URL.Host == "" {
				return nil, fmt.Errorf("no Host in request URL")
			}
			if secure && r.URL.Scheme == "http" {
				t.Fatalf("an https import went on over http: %s", r.URL.Redacted())
			}
			if _, p, ok := r.BasicAuth(); ok && p == "Pw-5ecret" && (r.URL.Host != "imaged.test" || (secure && r.URL.Scheme != "https")) {
				t.Fatalf("the source's credentials went to %s", r.URL.Redacted())
			}
			if first {
				first = false
				return fuzzAnswer(r, code, map[string]string{"Content-Range": contentRange, "Content-Length": contentLength,
					"ETag": etag, "Last-Modified": lastModified, "Location": location})
			}
			return fuzzAnswer(r, 0, map[string]string{"Content-Range": rangeCR})
		}
		c := defaultHTTPClient()
		c.Transport = roundTripFunc(serve)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Open(ctx, src, Options{HTTPClient: c})
		if leaks(err) {
			t.Fatalf("the error shows the source's secrets: %v", err)
		}
		if err != nil {
			return
		}
		defer s.Close()
		var got bytes.Buffer
		_, err = io.Copy(&got, io.LimitReader(s.Raw(), int64(2*len(fuzzObject))))
		if leaks(err) {
			t.Fatalf("the error shows the source's secrets: %v", err)
		}
		if s.Format == Raw && !bytes.Equal(got.Bytes(), fuzzObject[:min(got.Len(), len(fuzzObject))]) {
			t.Fatalf("%d bytes read (err %v), not the object's: %s", got.Len(), err, firstDiff(got.Bytes(), fuzzObject))
		}
		if err == nil && s.Format == Raw && s.InputSize >= 0 && int64(got.Len()) != s.InputSize {
			t.Fatalf("%d bytes read, the server said %d", got.Len(), s.InputSize)
		}
	})
}

// fuzzObject is what the fuzzed server holds: a raw image that no other format's magic matches.
var fuzzObject = bytes.Repeat([]byte("imaged raw fuzz object. "), 1000)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// fuzzAnswer serves r from fuzzObject (ranges, If-Match against the ETag "v1") with
// http.ServeContent; code, when not 0, replaces the status. Non-empty headers replace the
// answer's. The answer is written in HTTP/1.1 and read back with http.ReadResponse, so that only
// what a real server could send reaches the client.
func fuzzAnswer(r *http.Request, code int, headers map[string]string) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rec.Header().Set("ETag", `"v1"`)
	http.ServeContent(rec, r, "", time.Unix(1700000000, 0), bytes.NewReader(fuzzObject))
	res := rec.Result()
	if code == 0 {
		code = res.StatusCode
	}
	body, _ := io.ReadAll(res.Body)
	h := res.Header.Clone()
	for k, v := range headers {
		if v != "" {
			h.Set(k, v)
		}
	}
	if code/100 == 3 || code == http.StatusNotModified {
		body = nil
	}
	var wire bytes.Buffer
	fmt.Fprintf(&wire, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	for k, vs := range h {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return nil, fmt.Errorf("fuzz: a header no server can send")
			}
			fmt.Fprintf(&wire, "%s: %s\r\n", k, v)
		}
	}
	wire.WriteString("\r\n")
	wire.Write(body)
	resp, err := http.ReadResponse(bufio.NewReader(&wire), r)
	if err != nil {
		return nil, err
	}
	if resp.Header.Get("Location") != "" {
		// Resolve as net/http does, for the checks on the next request.
		if _, err := url.Parse(resp.Header.Get("Location")); err != nil {
			return nil, err
		}
	}
	return resp, nil
}
