package blockcopy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

var errReset = errors.New("connection reset by peer")

// Retries back off exponentially (Backoff, doubled, at most 10 s), per block, and give up after
// Retries further attempts. Under synctest the clock is exact.
func TestRetryBackoff(t *testing.T) {
	img, m := testImage(t, "DDDD", 0, 30)
	for _, tc := range []struct {
		name     string
		backoff  time.Duration
		retries  int
		failures int // of the range starting at block 1
		gaps     []time.Duration
		fatal    bool
	}{
		{"recovers", time.Second, 5, 3, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second}, false},
		{"gives up", time.Second, 3, 100, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second}, true},
		{"capped", 4 * time.Second, 4, 100, []time.Duration{4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, true},
		{"no retries", time.Second, -1, 100, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := 0
				src := &memSource{img: img, fail: func(i int, off, _ int64) error {
					if off == bs && n < tc.failures {
						n++
						return errReset
					}
					return nil
				}}
				tgt := &memTarget{}
				start := time.Now()
				res, err := Copy(ctxb, tgt, src, m, Options{Workers: 1, Backoff: tc.backoff, Retries: tc.retries})
				var at []time.Time
				for i, r := range src.reqs {
					if r.off == bs {
						at = append(at, src.at[i])
					}
				}
				var gaps []time.Duration
				for i := 1; i < len(at); i++ {
					gaps = append(gaps, at[i].Sub(at[i-1]))
				}
				if !slices.Equal(gaps, tc.gaps) {
					t.Errorf("attempts %v apart, want %v", gaps, tc.gaps)
				}
				if !tc.fatal {
					if err != nil {
						t.Fatal(err)
					}
					checkImage(t, tgt, img, m)
					if res.Retries != 3*tc.failures {
						t.Errorf("Retries = %d, want %d (3 blocks × %d)", res.Retries, 3*tc.failures, tc.failures)
					}
					return
				}
				attempts := len(tc.gaps) + 1
				if !errors.Is(err, errReset) || !strings.Contains(err.Error(), "block 1 ") || !strings.Contains(err.Error(), "attempt "+string(rune('0'+attempts))) {
					t.Errorf("err = %v, want block 1's reset after %d attempts", err, attempts)
				}
				var total time.Duration
				for _, g := range tc.gaps {
					total += g
				}
				if d := time.Since(start); d != total {
					t.Errorf("gave up after %v, want %v", d, total)
				}
				for _, w := range tgt.writes {
					if w.off == 0 {
						t.Error("block 0 written by a failed copy")
					}
				}
			})
		})
	}
}

// A Source whose range ends early with a plain io.EOF is a short source too, retried from the
// block it broke in.
func TestShortSourceGeneric(t *testing.T) {
	img, m := testImage(t, "DDDD", 0, 31)
	synctest.Test(t, func(t *testing.T) {
		src := &memSource{img: img, cut: 2*bs + 10}
		_, err := Copy(ctxb, &memTarget{}, src, m, Options{Workers: 1, Retries: 2})
		if !errors.Is(err, ErrShortSource) || !strings.Contains(err.Error(), "block 2 ") {
			t.Fatalf("err = %v, want ErrShortSource in block 2", err)
		}
		var starts []int
		for _, r := range src.reqs {
			starts = append(starts, blockOf(r))
		}
		if !slices.Equal(starts, []int{1, 2, 2}) {
			t.Errorf("ranges started at blocks %v, want 1 then block 2 twice", starts)
		}
	})
}
