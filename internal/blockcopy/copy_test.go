package blockcopy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
)

// checkRequests fails unless the requests cover every non-zero block exactly once, no zero
// block, and block 0 last.
func checkRequests(t *testing.T, reqs []reqRec, m *images.Manifest, maxRange int64) {
	t.Helper()
	seen := make([]int, len(m.Blocks))
	for _, r := range reqs {
		if r.n > maxRange {
			t.Errorf("request %+v is longer than RangeSize %d", r, maxRange)
		}
		for b := r.off / bs; b*bs < r.off+r.n; b++ {
			seen[b]++
		}
	}
	for i, b := range m.Blocks {
		want := 1
		if b.Zero {
			want = 0
		}
		if seen[i] != want {
			t.Errorf("block %d (zero %v) was requested %d times, want %d", i, b.Zero, seen[i], want)
		}
	}
	if !m.Blocks[0].Zero && (len(reqs) == 0 || reqs[len(reqs)-1].off != 0) {
		t.Errorf("block 0 was not the last request: %v", reqs)
	}
}

func TestCopy(t *testing.T) {
	img, m := testImage(t, "DDZDDDDDDDDZZZZDDZDD", 1000, 1)
	nzBlocks, nzBytes := m.NonZero()
	for _, tc := range []struct {
		name string
		opt  Options
		init []byte
	}{
		{"defaults", Options{}, nil},
		{"old disk", Options{}, garbage(len(img) + 4096)},
		{"single stream", Options{Workers: 1, Hashers: 2}, nil},
		{"buffered", Options{Direct: DirectOff}, nil},
		{"zeroed target", Options{TargetZeroed: true}, nil},
		{"one block ranges", Options{RangeSize: bs, Workers: 3}, nil},
		{"read back full", Options{ReadBack: ReadBackFull}, nil},
		{"read back sample", Options{ReadBack: ReadBackSample}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, img)
			f := fileTarget(t, tc.init)
			res, err := Copy(ctxb, f, srv.source(t), m, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, f, img, m)
			rs := tc.opt.RangeSize
			if rs == 0 {
				rs = 4 << 20
			}
			checkRequests(t, srv.requests(), m, rs)
			workers := tc.opt.Workers
			if workers == 0 {
				workers = 4
			}
			// Each worker keeps its connection. net/http puts a connection back in the idle pool
			// just after the body's EOF is read, so a worker that asks again at once may now and
			// then dial one more: allow two such, but no connection per range.
			if n, reqs := srv.connections(), len(srv.requests()); n > workers+2 || reqs > workers+2 && n >= reqs {
				t.Errorf("%d connections for %d workers and %d ranges: ranges do not reuse their connection", n, workers, reqs)
			}
			if fi, _ := f.Stat(); fi.Size() < int64(len(img)) {
				t.Errorf("target is %d bytes, image %d", fi.Size(), len(img))
			}
			if res.BytesFetched != nzBytes || res.BytesWritten != nzBytes || res.BlocksVerified != nzBlocks {
				t.Errorf("fetched %d written %d verified %d blocks; want %d bytes, %d blocks", res.BytesFetched, res.BytesWritten, res.BlocksVerified, nzBytes, nzBlocks)
			}
			if got := res.BytesZeroed + res.BytesSkippedZero; got != int64(len(img))-nzBytes {
				t.Errorf("zeroed %d + skipped %d, want %d bytes of zero blocks", res.BytesZeroed, res.BytesSkippedZero, int64(len(img))-nzBytes)
			}
			if tc.opt.TargetZeroed && res.BytesZeroed != 0 {
				t.Errorf("zeroed %d bytes of a target known to be zero", res.BytesZeroed)
			}
			if tc.opt.Direct == DirectOff && res.Direct {
				t.Error("O_DIRECT used with DirectOff")
			}
			switch tc.opt.ReadBack {
			case ReadBackFull:
				if res.BlocksReadBack != len(m.Blocks) {
					t.Errorf("read back %d blocks, want %d", res.BlocksReadBack, len(m.Blocks))
				}
			case ReadBackSample:
				if res.BlocksReadBack < 10 || res.BlocksReadBack > len(m.Blocks) {
					t.Errorf("read back %d blocks of %d", res.BlocksReadBack, len(m.Blocks))
				}
			}
			t.Logf("%+v", res)
		})
	}
}

// A blob with one flipped byte is refused, naming the block, after its retries; block 0 is not
// written, so the old disk's first 512 KiB are unchanged.
func TestFlippedByte(t *testing.T) {
	img, m := testImage(t, "DDDDDDDDZDDD", 0, 2)
	for _, bad := range []int{5, 0} {
		t.Run(fmt.Sprintf("block %d", bad), func(t *testing.T) {
			blob := bytes.Clone(img)
			blob[bad*bs+12345] ^= 0x01
			srv := newBlobServer(t, blob)
			old := garbage(len(img))
			f := fileTarget(t, old)
			// Patient with the network (9 retries), not with corrupt bytes (2).
			res, err := Copy(ctxb, f, srv.source(t), m, Options{Retries: 9, ChecksumRetries: 2, Backoff: time.Millisecond})
			var ce *ChecksumError
			if !errors.As(err, &ce) || !errors.Is(err, ErrChecksum) {
				t.Fatalf("err = %v, want a *ChecksumError", err)
			}
			if ce.Block != int64(bad) || ce.Attempts != 3 || ce.OnTarget || ce.Want != m.Blocks[bad].SHA256 {
				t.Errorf("ChecksumError = %+v, want block %d, 3 attempts, from the source", ce, bad)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("block %d ", bad)) {
				t.Errorf("error %q does not name block %d", err, bad)
			}
			if got := readAll(t, f, bs); !bytes.Equal(got, old[:bs]) {
				t.Error("block 0 of the target was written")
			}
			n := 0
			for _, r := range srv.requests() {
				if r.off <= int64(bad)*bs && int64(bad)*bs < r.off+r.n {
					n++
				}
			}
			if n != 3 {
				t.Errorf("block %d requested %d times, want 3", bad, n)
			}
			if res.Retries < 2 {
				t.Errorf("Result.Retries = %d", res.Retries)
			}
		})
	}
}

// countingFile is a file target seen through a wrapper (so Copy uses only Target's methods),
// counting writes.
type countingFile struct {
	*os.File
	mu     sync.Mutex
	writes []reqRec
}

func (c *countingFile) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, reqRec{off, int64(len(p))})
	c.mu.Unlock()
	return c.File.WriteAt(p, off)
}

func blocksOf(rs []reqRec) []int {
	var out []int
	for _, r := range rs {
		for b := r.off / bs; b*bs < r.off+r.n; b++ {
			out = append(out, int(b))
		}
	}
	slices.Sort(out)
	return out
}

// Delta mode: a target holding version 1 gets version 2 by fetching and writing only the blocks
// that differ, block 0 last.
func TestDelta(t *testing.T) {
	v1, _ := testImage(t, "DDDDZZDDDDDDDDZD", 777, 6)
	v2 := bytes.Clone(v1)
	v2[10] ^= 1                                  // block 0: boot sector changed
	copy(v2[3*bs:], bytes.Repeat([]byte{7}, 99)) // block 3 changed
	copy(v2[4*bs+5:], []byte("now data"))        // block 4: zero → data
	clear(v2[7*bs : 8*bs])                       // block 7: data → zero
	v2[12*bs+bs-1] ^= 0x80                       // block 12 changed
	m2 := manifestOf(t, v2)
	changed := []int{0, 3, 4, 7, 12}

	srv := newBlobServer(t, v2)
	cf := &countingFile{File: fileTarget(t, v1)}
	res, err := Copy(ctxb, cf, srv.source(t), m2, Options{Delta: true, RangeSize: 2 * bs})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, cf, v2, m2)
	if got := blocksOf(cf.writes); !slices.Equal(got, changed) {
		t.Errorf("wrote blocks %v, want only the changed %v", got, changed)
	}
	if last := cf.writes[len(cf.writes)-1]; last.off != 0 {
		t.Errorf("last write at %d, want block 0 last", last.off)
	}
	if got := blocksOf(srv.requests()); !slices.Equal(got, []int{0, 3, 4, 12}) {
		t.Errorf("fetched blocks %v, want the changed non-zero ones [0 3 4 12]", got)
	}
	if res.BlocksSame != len(m2.Blocks)-len(changed) {
		t.Errorf("BlocksSame = %d, want %d", res.BlocksSame, len(m2.Blocks)-len(changed))
	}

	// The same image again: nothing fetched, nothing written.
	cf.writes = nil
	srv2 := newBlobServer(t, v2)
	res, err = Copy(ctxb, cf, srv2.source(t), m2, Options{Delta: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.writes) != 0 || len(srv2.requests()) != 0 || res.BlocksSame != len(m2.Blocks) {
		t.Errorf("identical target: %d writes, %d requests, %d same blocks", len(cf.writes), len(srv2.requests()), res.BlocksSame)
	}
}

// sizedTarget has a fixed capacity.
type sizedTarget struct {
	memTarget
	size int64
}

func (s *sizedTarget) Size() (int64, error) { return s.size, nil }

func TestTargetTooSmall(t *testing.T) {
	img, m := testImage(t, "DDDZ", 10, 7)
	srv := newBlobServer(t, img)
	_, err := Copy(ctxb, &sizedTarget{size: int64(len(img)) - 1}, srv.source(t), m, Options{})
	if !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("err = %v, want ErrTargetTooSmall", err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("%d requests sent for a target too small", n)
	}
	if _, err := Copy(ctxb, &sizedTarget{size: int64(len(img))}, srv.source(t), m, Options{}); err != nil {
		t.Errorf("a target of exactly the image's size: %v", err)
	}
}

// Blocks of one stream are hashed on several goroutines at once: the hook holds each hasher
// until a second one is inside too (or a second passes), so serial hashing shows up as a
// maximum of one.
func TestHashersConcurrent(t *testing.T) {
	img, m := testImage(t, strings.Repeat("D", 16), 0, 9)
	srv := newBlobServer(t, img)
	var inside, most atomic.Int32
	var met atomic.Bool
	testHashHook = func() {
		n := inside.Add(1)
		defer inside.Add(-1)
		for deadline := time.Now().Add(time.Second); !met.Load() && time.Now().Before(deadline); {
			if n = inside.Load(); n >= 2 {
				met.Store(true)
			}
			time.Sleep(time.Millisecond)
		}
		if n > most.Load() {
			most.Store(n)
		}
	}
	t.Cleanup(func() { testHashHook = nil })
	f := fileTarget(t, nil)
	res, err := Copy(ctxb, f, srv.source(t), m, Options{Workers: 1, Hashers: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, f, img, m)
	if most.Load() < 2 || res.MaxHashing < 2 {
		t.Errorf("at most %d blocks hashed at once (Result.MaxHashing %d), want several", most.Load(), res.MaxHashing)
	}
}

// lyingTarget accepts writes but reads block bad back corrupted.
type lyingTarget struct {
	countingFile
	bad int64
}

func (l *lyingTarget) ReadAt(p []byte, off int64) (int, error) {
	n, err := l.File.ReadAt(p, off)
	if o := l.bad*bs - off; o >= 0 && o < int64(n) {
		p[o] ^= 1
	}
	return n, err
}

// Read-back finds a block the disk did not keep, before block 0 is written.
func TestReadBackMismatch(t *testing.T) {
	img, m := testImage(t, "DDDDDDDD", 0, 13)
	srv := newBlobServer(t, img)
	lt := &lyingTarget{countingFile: countingFile{File: fileTarget(t, nil)}, bad: 4}
	_, err := Copy(ctxb, lt, srv.source(t), m, Options{ReadBack: ReadBackFull})
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Block != 4 || !ce.OnTarget {
		t.Fatalf("err = %v, want a read-back *ChecksumError for block 4", err)
	}
	for _, w := range lt.writes {
		if w.off == 0 {
			t.Error("block 0 was written before read-back passed")
		}
	}
}

func TestVerify(t *testing.T) {
	img, m := testImage(t, "DDZDDDDZDD", 4000, 14)
	if err := Verify(ctxb, bytes.NewReader(img), m, 3); err != nil {
		t.Fatalf("Verify of the image itself: %v", err)
	}
	bad := bytes.Clone(img)
	bad[7*bs+1] = 1 // a zero block that is not
	bad[8*bs+1] ^= 1
	var ce *ChecksumError
	if err := Verify(ctxb, bytes.NewReader(bad), m, 3); !errors.As(err, &ce) || ce.Block != 7 || !ce.OnTarget {
		t.Errorf("Verify = %v, want a *ChecksumError for block 7 (the lowest bad one)", err)
	}
	if err := Verify(ctxb, bytes.NewReader(img[:len(img)-1]), m, 2); !errors.Is(err, ErrTargetTooSmall) {
		t.Errorf("Verify of a short target = %v, want ErrTargetTooSmall", err)
	}
	if err := Verify(ctxb, io.NewSectionReader(bytes.NewReader(img), 0, int64(len(img))), m, 0); err != nil {
		t.Errorf("Verify with default workers: %v", err)
	}
}
