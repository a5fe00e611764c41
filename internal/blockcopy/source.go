package blockcopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Source serves byte ranges of the image. Copy reads each range it opens block by block, so a
// range that breaks off keeps the blocks that arrived whole, and only the rest is asked again.
type Source interface {
	// OpenRange returns the n bytes of the image starting at off. The reader must fail (not
	// return io.EOF early) if it cannot deliver all n bytes; wrap ErrShortSource for a source
	// that ends early, and Permanent(err) for an error that retrying cannot cure.
	OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// HTTPSource reads the blob at URL with ranged GETs (imaged's GET /images/{digest}/blob, which
// is http.ServeContent; any server honouring single ranges will do).
type HTTPSource struct {
	URL *url.URL
	// ETag is the blob's strong ETag, sent as If-Match: if the blob behind the URL changes during
	// the copy the server answers 412 (ErrSourceChanged) instead of mixing two images. (If-Range
	// would silently answer 200 with the whole new blob.) Empty sends no guard.
	ETag string
	// Client defaults to NewClient().
	Client *http.Client
	// Stall abandons a response that delivers no byte for this long (the block is retried on a
	// new connection). Zero means 30 s.
	Stall time.Duration
}

// NewClient returns an HTTP client for HTTPSource: no proxy (the agent talks to its own imaged),
// no compression (blocks are hashed as sent), and enough idle connections per host that
// Options.Workers keep theirs between ranges.
func NewClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}}
}

var errStalled = errors.New("blockcopy: source stalled")

// OpenRange implements Source.
func (s *HTTPSource) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if n <= 0 || off < 0 {
		return nil, fmt.Errorf("blockcopy: bad range %d+%d", off, n)
	}
	client := s.Client
	if client == nil {
		client = defaultClient
	}
	stall := s.Stall
	if stall <= 0 {
		stall = 30 * time.Second
	}
	rctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	fail := func(err error) (io.ReadCloser, error) {
		timer.Stop()
		cancel(nil)
		return nil, err
	}

	u := s.URL.String()
	rng := fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(Permanent(err))
	}
	req.Header.Set("Range", rng)
	req.Header.Set("Accept-Encoding", "identity")
	if s.ETag != "" {
		req.Header.Set("If-Match", s.ETag)
	}
	resp, err := client.Do(req)
	if err != nil {
		if context.Cause(rctx) == errStalled && ctx.Err() == nil {
			err = fmt.Errorf("%w: no response headers in %v: %v", errStalled, stall, err)
		}
		return fail(err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		// RFC 9110 §14.2: a server may ignore Range and answer 200 with the whole blob; that is
		// not a range we can place, so it is a server error like any other status.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return fail(&ServerError{Status: resp.StatusCode, URL: u, Range: rng})
	}
	// RFC 9110 §14.4: Content-Range "bytes first-last/complete". A shorter range than asked
	// means the blob ends before the manifest says it does.
	first, last, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err == nil && (first != off || last != off+n-1) {
		err = fmt.Errorf("%w: asked %s, server sent Content-Range %q", ErrShortSource, rng, resp.Header.Get("Content-Range"))
	}
	if err == nil && resp.ContentLength >= 0 && resp.ContentLength != n {
		err = fmt.Errorf("blockcopy: asked %s, server sent Content-Length %d", rng, resp.ContentLength)
	}
	if err != nil {
		resp.Body.Close()
		return fail(Permanent(err))
	}
	return &httpBody{rc: resp.Body, left: n, n: n, ctx: ctx, rctx: rctx, cancel: cancel, timer: timer, stall: stall}, nil
}

var defaultClient = NewClient()

func parseContentRange(s string) (first, last int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	a, b, ok2 := strings.Cut(rest, "-")
	b, _, ok3 := strings.Cut(b, "/")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("blockcopy: bad Content-Range %q", s)
	}
	if first, err = strconv.ParseInt(a, 10, 64); err == nil {
		last, err = strconv.ParseInt(b, 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("blockcopy: bad Content-Range %q", s)
	}
	return first, last, nil
}

// httpBody counts the range's bytes: ending early is ErrShortSource, never io.EOF.
type httpBody struct {
	rc      io.ReadCloser
	left, n int64
	ctx     context.Context // the caller's
	rctx    context.Context // the request's: the caller's, or cancelled by the stall timer
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	stall   time.Duration
}

func (b *httpBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if n > 0 {
		b.timer.Reset(b.stall)
	}
	switch {
	case b.left == 0:
		return n, nil
	case err == nil:
		return n, nil
	case context.Cause(b.rctx) == errStalled && b.ctx.Err() == nil:
		return n, fmt.Errorf("%w: nothing for %v after %d of %d bytes", errStalled, b.stall, b.n-b.left, b.n)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return n, fmt.Errorf("%w: body ended after %d of %d bytes", ErrShortSource, b.n-b.left, b.n)
	}
	return n, err
}

func (b *httpBody) Close() error {
	b.timer.Stop()
	if b.left == 0 {
		// Read to the body's EOF so that the transport reuses the connection for the next range.
		var one [1]byte
		b.rc.Read(one[:])
	}
	err := b.rc.Close()
	b.cancel(nil)
	return err
}
