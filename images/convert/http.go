package convert

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"

	"github.com/imaged/imaged/images"
)

// httpBackend reads an http(s) URL: ranged GETs when the server supports them (RFC 9110 §14),
// else the one response body as a stream.
type httpBackend struct {
	ctx    context.Context
	client *http.Client
	url    string
	// shown is url for messages: without its userinfo and signing parameters
	// (images.RedactSource), which errors end up in logs and terminals.
	shown string
	n     int64
	// etag is the first response's strong ETag, sent as If-Match on every later request so that
	// an object replaced mid-import fails (412) instead of mixing two images.
	etag string
	ra   *rangeReaderAt
	body *bufio.Reader // no range support: the first response's body
	c    io.Closer
}

// probeLen is how much the first request asks for; format detection reads this head.
const probeLen = headLen

func openHTTP(ctx context.Context, url string, opt Options) (*httpBackend, error) {
	shown, _ := images.RedactSource(url)
	b := &httpBackend{ctx: ctx, client: opt.HTTPClient, url: url, shown: shown, n: -1}
	if b.client == nil {
		b.client = defaultHTTPClient()
	}
	b.client = noDowngrade(b.client)
	resp, err := b.get(0, probeLen)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		defer resp.Body.Close()
		start, total, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != 0 || total < 0 {
			return nil, fmt.Errorf("convert: %s: Content-Range %q: want the object's size", b.shown, resp.Header.Get("Content-Range"))
		}
		b.n = total
		if et := resp.Header.Get("ETag"); strings.HasPrefix(et, `"`) { // weak ETags (W/"…") can't be used with If-Match
			b.etag = et
		}
		b.ra = &rangeReaderAt{ctx: ctx, r: b, size: total}
		// Keep the probe's bytes: format detection reads them next.
		head, err := io.ReadAll(io.LimitReader(resp.Body, probeLen))
		if err != nil {
			return nil, fmt.Errorf("convert: GET %s: %w", b.shown, err)
		}
		b.ra.wins[0] = window{off: 0, b: head}
		return b, nil
	case http.StatusOK:
		// The server ignored Range (RFC 9110 §14.2: "A server MAY ignore the Range header
		// field"): this body is the only stream there is.
		b.n = resp.ContentLength
		b.body = bufio.NewReaderSize(resp.Body, probeLen)
		b.c = resp.Body
		return b, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s: the source is empty", ErrCorrupt, b.shown)
	case http.StatusNotFound, http.StatusGone:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s", ErrNotFound, b.shown, resp.Status)
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("convert: GET %s: %s", b.shown, resp.Status)
	}
}

// maxRedirects is net/http's own limit, kept when a redirect policy replaces its default.
const maxRedirects = 10

// noDowngrade returns c with a redirect policy that refuses a redirect from https to http: the
// bytes of an import become an image with whatever digest they have, so an import asked over
// https must not be served by whoever sits on a plain-http path (net/http follows such
// redirects by default). The client's own policy, or net/http's limit, applies on top.
func noDowngrade(c *http.Client) *http.Client {
	cc := *c
	next := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirected from https to %s://%s: an https import does not go on over plain http", req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &cc
}

// get requests n bytes at off (n < 0: the whole object, no Range header).
func (b *httpBackend) get(off, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return nil, fmt.Errorf("convert: GET %s: not a URL", b.shown) // its parse error quotes it whole
	}
	// Bytes as stored: a server's transparent gzip would change lengths and offsets.
	req.Header.Set("Accept-Encoding", "identity")
	if n >= 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	if b.etag != "" {
		req.Header.Set("If-Match", b.etag)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		// net/http's errors name the URL (a redirect's target, perhaps) hiding only its password.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			ue.URL, _ = images.RedactSource(ue.URL)
		}
		return nil, fmt.Errorf("convert: GET %s: %w", b.shown, err)
	}
	return resp, nil
}

// status checks that resp answered want, and closes it if not. A 412 is If-Match refused: the
// object changed since it was opened. what names the request in the error.
func (b *httpBackend) status(resp *http.Response, want int, what string) error {
	if resp.StatusCode == want {
		return nil
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusPreconditionFailed {
		return fmt.Errorf("%w: %s changed while being read (ETag is no longer %s)", ErrCorrupt, b.shown, b.etag)
	}
	return fmt.Errorf("convert: %s: %s", what, resp.Status)
}

func (b *httpBackend) openRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	resp, err := b.get(off, n)
	if err != nil {
		return nil, err
	}
	if err := b.status(resp, http.StatusPartialContent, fmt.Sprintf("GET %s bytes %d-%d", b.shown, off, off+n-1)); err != nil {
		return nil, err
	}
	if start, _, err := contentRange(resp.Header.Get("Content-Range")); err != nil || start != off {
		resp.Body.Close()
		return nil, fmt.Errorf("convert: GET %s bytes %d-%d: answered Content-Range %q", b.shown, off, off+n-1, resp.Header.Get("Content-Range"))
	}
	return resp.Body, nil
}

func (b *httpBackend) name() string { return b.shown }
func (b *httpBackend) size() int64  { return b.n }
func (b *httpBackend) readerAt() io.ReaderAt {
	if b.ra == nil {
		return nil
	}
	return b.ra
}

func (b *httpBackend) peek(n int) ([]byte, error) {
	p, err := b.body.Peek(n)
	if err == io.EOF || err == bufio.ErrBufferFull {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("convert: GET %s: %w", b.shown, err)
	}
	return p, nil
}

func (b *httpBackend) stream() (io.ReadCloser, error) {
	if b.body != nil {
		return io.NopCloser(b.body), nil // closed by Close
	}
	resp, err := b.get(0, -1)
	if err != nil {
		return nil, err
	}
	if err := b.status(resp, http.StatusOK, "GET "+b.shown); err != nil {
		return nil, err
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b.n {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s: %d bytes now, %d before", ErrCorrupt, b.shown, resp.ContentLength, b.n)
	}
	return resp.Body, nil
}

func (b *httpBackend) Close() error {
	if b.c != nil {
		return b.c.Close()
	}
	return nil
}

// contentRange parses "bytes first-last/complete" (RFC 9110 §14.4); complete is -1 for "*".
func contentRange(s string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("no bytes unit")
	}
	rng, complete, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("no complete length")
	}
	first, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("no range")
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, err
	}
	if complete == "*" {
		return start, -1, nil
	}
	total, err = strconv.ParseInt(complete, 10, 64)
	return start, total, err
}
