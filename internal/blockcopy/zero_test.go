package blockcopy

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// isHole reports whether [off, off+n) of f is a hole (SEEK_DATA finds no data before its end).
func isHole(t *testing.T, f *os.File, off, n int64) bool {
	t.Helper()
	d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return d >= off+n
}

// Zero blocks on a target full of old data are zeroed by each mode, and left alone on a target
// known to be zero.
func TestZeroModes(t *testing.T) {
	img, m := testImage(t, "DZZDZDDZZZZD", 0, 20)
	zeroBlocks := []int{1, 2, 4, 7, 8, 9, 10}
	for _, tc := range []struct {
		name   string
		opt    Options
		method string
		holes  int // 1: zero blocks must be holes, -1: must not, 0: either (ZERO_RANGE's unwritten extents count as holes on ext4)
	}{
		{"auto", Options{}, "discard", 1},
		{"discard", Options{Zero: ZeroDiscard}, "discard", 1},
		{"zeroout", Options{Zero: ZeroOut}, "zeroout", 0},
		{"write", Options{Zero: ZeroWrite}, "write", -1},
		{"write buffered", Options{Zero: ZeroWrite, Direct: DirectOff}, "write", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, img)
			f := fileTarget(t, garbage(len(img)))
			res, err := Copy(ctxb, f, srv.source(t), m, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, f, img, m)
			if res.ZeroMethod != tc.method || res.BytesZeroed != int64(len(zeroBlocks))*bs {
				t.Errorf("zeroed %d bytes by %q, want %d by %q", res.BytesZeroed, res.ZeroMethod, len(zeroBlocks)*bs, tc.method)
			}
			for _, b := range zeroBlocks {
				if h := isHole(t, f, int64(b)*bs, bs); tc.holes != 0 && h != (tc.holes > 0) {
					t.Errorf("block %d: hole %v, want %v", b, h, tc.holes > 0)
				}
			}
		})
	}

	t.Run("target zeroed", func(t *testing.T) {
		// Told the target is zero, Copy leaves zero blocks alone: the old data there stays
		// (which is why TargetZeroed is only for targets that really are).
		srv := newBlobServer(t, img)
		f := fileTarget(t, garbage(len(img)))
		res, err := Copy(ctxb, f, srv.source(t), m, Options{TargetZeroed: true})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, f, int64(len(img)))
		if !bytes.Equal(got[bs:2*bs], garbage(bs)) || res.BytesSkippedZero != int64(len(zeroBlocks))*bs || res.BytesZeroed != 0 {
			t.Errorf("zero blocks touched: skipped %d, zeroed %d", res.BytesSkippedZero, res.BytesZeroed)
		}
	})

	t.Run("new sparse file", func(t *testing.T) {
		// A new file, known zero, ending in zero blocks: holes, and still the image's length.
		img, m := testImage(t, "DZDZZ", 100, 21)
		srv := newBlobServer(t, img)
		f := fileTarget(t, nil)
		if _, err := Copy(ctxb, f, srv.source(t), m, Options{TargetZeroed: true}); err != nil {
			t.Fatal(err)
		}
		checkImage(t, f, img, m)
		if fi, _ := f.Stat(); fi.Size() != int64(len(img)) {
			t.Errorf("file is %d bytes, image %d", fi.Size(), len(img))
		}
		if !isHole(t, f, 3*bs, 2*bs-100) {
			t.Error("trailing zero blocks were written, not left as a hole")
		}
	})

	t.Run("delta", func(t *testing.T) {
		// Delta mode reads zero blocks first: those already zero are not zeroed again.
		old := bytes.Clone(img)
		copy(old[2*bs:], []byte("stale")) // block 2 not zero on the target
		srv := newBlobServer(t, img)
		cf := &countingFile{File: fileTarget(t, old)}
		res, err := Copy(ctxb, cf, srv.source(t), m, Options{Delta: true, Zero: ZeroWrite})
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, cf, img, m)
		if got := blocksOf(cf.writes); len(got) != 1 || got[0] != 2 || res.BytesZeroed != bs {
			t.Errorf("wrote blocks %v, zeroed %d bytes; want block 2 only", got, res.BytesZeroed)
		}
	})
}
