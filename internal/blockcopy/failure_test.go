package blockcopy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A body that ends early (the server's Content-Length lies) is retried from the block it broke
// in, then refused as ErrShortSource naming that block. The blocks before it are not asked again.
func TestTruncatedBody(t *testing.T) {
	img, m := testImage(t, "DDDDDDDDDD", 0, 3)
	srv := newBlobServer(t, img)
	const cut = 3*bs + 1000
	srv.hook = func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool {
		if rr.off > cut || rr.off+rr.n <= cut {
			return false
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rr.off, rr.off+rr.n-1, len(img)))
		w.Header().Set("Content-Length", fmt.Sprint(rr.n))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[rr.off:cut])
		return true // the handler returns short of its Content-Length: net/http closes the connection
	}
	f := fileTarget(t, garbage(len(img)))
	_, err := Copy(ctxb, f, srv.source(t), m, Options{Retries: 2, Backoff: time.Millisecond, Workers: 1})
	if !errors.Is(err, ErrShortSource) || !strings.Contains(err.Error(), "block 3 ") {
		t.Fatalf("err = %v, want ErrShortSource in block 3", err)
	}
	// Block 9's own range may go out between the attempts; leave it out.
	reqs := slices.DeleteFunc(srv.requests(), func(r reqRec) bool { return r.off == 9*bs })
	want := []reqRec{{bs, 8 * bs}, {3 * bs, 6 * bs}, {3 * bs, 6 * bs}}
	if !slices.Equal(reqs, want) {
		t.Errorf("requests %v, want %v", reqs, want)
	}
	got := readAll(t, f, int64(len(img)))
	if !bytes.Equal(got[bs:3*bs], img[bs:3*bs]) {
		t.Error("blocks 1-2, which arrived whole, were not written")
	}
	if !bytes.Equal(got[:bs], garbage(bs)) {
		t.Error("block 0 was written")
	}
}

// A blob shorter than its manifest is ErrShortSource at once: no retry can lengthen it.
func TestShortBlob(t *testing.T) {
	img, m := testImage(t, "DDDDDD", 0, 4)
	srv := newBlobServer(t, img[:4*bs+10])
	f := fileTarget(t, nil)
	_, err := Copy(ctxb, f, srv.source(t), m, Options{Backoff: time.Millisecond, RangeSize: bs})
	if !errors.Is(err, ErrShortSource) {
		t.Fatalf("err = %v, want ErrShortSource", err)
	}
	for _, b := range []int{4, 5} {
		n := 0
		for _, r := range srv.requests() {
			if blockOf(r) == b {
				n++
			}
		}
		if n > 1 {
			t.Errorf("block %d requested %d times: a short blob was retried", b, n)
		}
	}
}

// Connections dropped in the middle of two ranges: the copy completes, and only the blocks that
// had not arrived whole are asked again.
func TestDroppedConnections(t *testing.T) {
	img, m := testImage(t, strings.Repeat("D", 20)+"ZZ"+strings.Repeat("D", 6), 0, 5)
	srv := newBlobServer(t, img)
	var killed sync.Map // request index → bytes delivered
	srv.hook = func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool {
		if i != 1 && i != 2 {
			return false
		}
		deliver := int64(bs + bs/2)
		w.Header().Set("ETag", srv.etag)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rr.off, rr.off+rr.n-1, len(img)))
		w.Header().Set("Content-Length", fmt.Sprint(rr.n))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[rr.off : rr.off+deliver])
		http.NewResponseController(w).Flush()
		killed.Store(i, deliver)
		panic(http.ErrAbortHandler) // the server drops the connection
	}
	f := fileTarget(t, nil)
	res, err := Copy(ctxb, f, srv.source(t), m, Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, f, img, m)

	// Count the blocks each request delivered whole: every non-zero block exactly once.
	reqs := srv.requests()
	delivered := make([]int, len(m.Blocks))
	retried := 0
	for i, r := range reqs {
		n := r.n
		if d, ok := killed.Load(i); ok {
			n = d.(int64) / bs * bs
			retried += int(r.n/bs) - int(n/bs)
			again := slices.ContainsFunc(reqs[i+1:], func(q reqRec) bool { return q.off == r.off+n })
			if !again {
				t.Errorf("no request resumed the dropped range %+v at its first missing block", r)
			}
		}
		for b := r.off / bs; b*bs < r.off+n; b++ {
			delivered[b]++
		}
	}
	for i, b := range m.Blocks {
		if want := map[bool]int{true: 0, false: 1}[b.Zero]; delivered[i] != want {
			t.Errorf("block %d delivered %d times, want %d", i, delivered[i], want)
		}
	}
	_, nz := m.NonZero()
	if want := nz + 2*bs/2; res.BytesFetched != want {
		t.Errorf("fetched %d bytes, want %d (the image's data and two half blocks)", res.BytesFetched, want)
	}
	if res.Retries != retried {
		t.Errorf("Result.Retries = %d, want %d", res.Retries, retried)
	}
}

// Cancelling the context stops the copy promptly, with block 0 unwritten.
func TestCancel(t *testing.T) {
	img, m := testImage(t, strings.Repeat("D", 40), 0, 8)
	srv := newBlobServer(t, img)
	stalled := make(chan struct{}, 16)
	srv.hook = func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool {
		if i < 2 {
			return false
		}
		stalled <- struct{}{}
		<-r.Context().Done()
		return true
	}
	ctx, cancel := context.WithCancel(ctxb)
	go func() { <-stalled; cancel() }()
	f := fileTarget(t, garbage(len(img)))
	start := time.Now()
	_, err := Copy(ctx, f, srv.source(t), m, Options{Workers: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Copy returned %v after cancel", d)
	}
	if !bytes.Equal(readAll(t, f, bs), garbage(bs)) {
		t.Error("block 0 was written")
	}
}

// If-Match: a blob that changed behind its URL is refused at once (412), never mixed in.
func TestSourceChanged(t *testing.T) {
	img, m := testImage(t, "DDDDDDDD", 0, 10)
	srv := newBlobServer(t, img)
	src := srv.source(t)
	src.ETag = `"sha256:an-older-blob"`
	_, err := Copy(ctxb, fileTarget(t, nil), src, m, Options{Backoff: time.Millisecond, RangeSize: bs})
	var se *ServerError
	if !errors.Is(err, ErrSourceChanged) || !errors.As(err, &se) || se.Status != http.StatusPreconditionFailed {
		t.Fatalf("err = %v, want ErrSourceChanged from a 412", err)
	}
	seen := map[int64]bool{}
	for _, r := range srv.requests() {
		if seen[r.off] {
			t.Errorf("range %+v asked again after a 412", r)
		}
		seen[r.off] = true
	}
}

// 503 is retried, then reported as a *ServerError; 404 is not retried.
func TestServerErrors(t *testing.T) {
	img, m := testImage(t, "DDDD", 0, 11)
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusNotFound} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			srv := newBlobServer(t, img)
			srv.hook = func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool {
				http.Error(w, "no", status)
				return true
			}
			_, err := Copy(ctxb, fileTarget(t, nil), srv.source(t), m, Options{Retries: 2, Backoff: time.Millisecond, Workers: 1})
			var se *ServerError
			if !errors.As(err, &se) || se.Status != status {
				t.Fatalf("err = %v, want a *ServerError %d", err, status)
			}
			want := 3
			if status == http.StatusNotFound {
				want = 1
			}
			if n := len(srv.requests()); n != want {
				t.Errorf("%d requests, want %d", n, want)
			}
		})
	}
}

// A response that stops sending is abandoned after Stall and the rest is fetched again.
func TestStall(t *testing.T) {
	img, m := testImage(t, "DDDDDD", 0, 12)
	srv := newBlobServer(t, img)
	srv.hook = func(w http.ResponseWriter, r *http.Request, i int, rr reqRec) bool {
		if i != 0 {
			return false
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rr.off, rr.off+rr.n-1, len(img)))
		w.Header().Set("Content-Length", fmt.Sprint(rr.n))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(img[rr.off : rr.off+bs])
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return true
	}
	src := srv.source(t)
	src.Stall = 200 * time.Millisecond
	f := fileTarget(t, nil)
	start := time.Now()
	res, err := Copy(ctxb, f, src, m, Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, f, img, m)
	if d := time.Since(start); d > 5*time.Second || res.Retries == 0 {
		t.Errorf("took %v with %d retries", d, res.Retries)
	}
}
