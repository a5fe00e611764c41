package blockcopy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imaged/imaged/images"
)

// The pipeline: Workers fetchers each take a job (a run of adjacent blocks), fill a buffer from
// one ranged request, and hand every block to the hashers as soon as it has arrived; writers
// wait for a job's hashes, write its verified blocks at their offsets and give the buffer back.
// Memory is the buffer pool: Workers+2 buffers of RangeSize bytes, whatever the image's size.

type blockState uint8

const (
	stTodo    blockState = iota // to fetch (or, in delta mode, not yet compared)
	stTarget                    // holds the target's bytes, being hashed (delta)
	stSame                      // the target already holds this block (delta)
	stFetched                   // holds the source's bytes, being hashed
	stGood                      // verified
	stBad                       // failed its checksum
)

// job is a run of adjacent blocks, all zero or all non-zero.
type job struct {
	first, n  int // blocks [first, first+n)
	zero      bool
	compared  bool      // delta comparison done on an earlier attempt
	notBefore time.Time // retry backoff

	buf    []byte
	state  []blockState
	got    []images.Hash // hashes of bad blocks
	wg     sync.WaitGroup
	failAt int // block (index in the job) whose fetch failed; -1 if none
	err    error
}

func (j *job) block(c *copier, k int) []byte {
	off := k * images.BlockSize
	return j.buf[off : off+int(c.m.Len(j.first+k))]
}

// span is the byte length of blocks [lo, hi) of the job.
func (j *job) span(c *copier, lo, hi int) int64 {
	return c.m.Offset(j.first+hi-1) + c.m.Len(j.first+hi-1) - c.m.Offset(j.first+lo)
}

// toHash hands block k, now in state st (its bytes in the buffer), to the hashers; j.wg counts
// it until it is hashed. If ctx ends first the block is stTodo again and toHash returns false.
func (j *job) toHash(ctx context.Context, k int, st blockState, hashq chan<- hashTask) bool {
	j.state[k] = st
	j.wg.Add(1)
	select {
	case hashq <- hashTask{j, k}:
		return true
	case <-ctx.Done():
		j.state[k] = stTodo
		j.wg.Done()
		return false
	}
}

type hashTask struct {
	j *job
	k int
}

type copier struct {
	d      *dev
	src    Source
	m      *images.Manifest
	opt    Options
	pool   *pool
	blocks int // per range

	fetched, written, zeroed, skippedZero, skippedSame atomic.Int64
	verified, same, readBacks, requests, retries       atomic.Int64
	hashNanos, hashing, maxHashing                     atomic.Int64

	progressMu sync.Mutex
}

func newCopier(d *dev, src Source, m *images.Manifest, opt Options) *copier {
	return &copier{
		d: d, src: src, m: m, opt: opt,
		pool:   &pool{size: int(opt.RangeSize), max: opt.Workers + 2, ch: make(chan []byte, opt.Workers+2)},
		blocks: int(opt.RangeSize / images.BlockSize),
	}
}

func (c *copier) result() Result {
	return Result{
		Size:             c.m.Size,
		BytesFetched:     c.fetched.Load(),
		BytesWritten:     c.written.Load(),
		BytesZeroed:      c.zeroed.Load(),
		BytesSkippedZero: c.skippedZero.Load(),
		BytesSkippedSame: c.skippedSame.Load(),
		BlocksVerified:   int(c.verified.Load()),
		BlocksSame:       int(c.same.Load()),
		BlocksReadBack:   int(c.readBacks.Load()),
		Requests:         int(c.requests.Load()),
		Retries:          int(c.retries.Load()),
		Direct:           c.d.usedDirect(),
		ZeroMethod:       c.d.zeroMethod(),
		HashTime:         time.Duration(c.hashNanos.Load()),
		MaxHashing:       int(c.maxHashing.Load()),
	}
}

func (c *copier) progress(start time.Time) {
	if c.opt.Progress == nil {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	r := c.result()
	r.Duration = time.Since(start)
	c.opt.Progress(r)
}

// run copies blocks [lo, hi) and returns when all are written or the copy failed.
func (c *copier) run(parent context.Context, lo, hi int) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	q := newQueue(ctx, c, lo, hi, cancel)
	defer q.stop()
	start := time.Now()

	hashq := make(chan hashTask, 2*c.opt.Hashers)
	writeq := make(chan *job, c.opt.Workers)
	var fetchers, hashers, writers sync.WaitGroup
	for range c.opt.Hashers {
		hashers.Go(func() {
			for t := range hashq {
				c.hash(t)
			}
		})
	}
	// Two writers at least, so that one O_DIRECT write is queued while another completes.
	for range max(2, c.opt.Workers) {
		writers.Go(func() {
			for j := range writeq {
				c.write(ctx, q, j)
				c.progress(start)
			}
		})
	}
	for range c.opt.Workers {
		fetchers.Go(func() { c.fetchLoop(ctx, q, hashq, writeq) })
	}
	fetchers.Wait()
	close(hashq)
	hashers.Wait()
	close(writeq)
	writers.Wait()

	if err := q.failure(); err != nil {
		return err
	}
	if err := parent.Err(); err != nil {
		return fmt.Errorf("blockcopy: %w", context.Cause(parent))
	}
	return nil
}

func (c *copier) fetchLoop(ctx context.Context, q *queue, hashq chan<- hashTask, writeq chan<- *job) {
	for {
		j, ok := q.take()
		if !ok {
			return
		}
		if d := time.Until(j.notBefore); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				q.finish(nil, nil)
				return
			}
		}
		if j.zero {
			q.finish(nil, c.zero(ctx, j))
			continue
		}
		buf, err := c.pool.get(ctx)
		if err != nil {
			q.finish(nil, nil)
			return
		}
		j.buf, j.failAt, j.err = buf, -1, nil
		j.state = make([]blockState, j.n)
		j.got = make([]images.Hash, j.n)
		if c.opt.Delta && !j.compared {
			if err := c.compare(ctx, j, hashq); err != nil {
				c.pool.put(buf)
				q.finish(nil, err)
				continue
			}
		}
		c.fetch(ctx, j, hashq)
		writeq <- j
	}
}

// compare reads the job's blocks from the target and hashes them: blocks that match are
// stSame and are neither fetched nor written.
func (c *copier) compare(ctx context.Context, j *job, hashq chan<- hashTask) error {
	j.compared = true
	n := j.span(c, 0, j.n)
	got, err := c.d.t.ReadAt(j.buf[:n], c.m.Offset(j.first))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("blockcopy: delta: read target at %d: %w", c.m.Offset(j.first), err)
	}
	for k := range j.n {
		if int64(k)*images.BlockSize+c.m.Len(j.first+k) > int64(got) {
			break // past the target's end: differs
		}
		j.toHash(ctx, k, stTarget, hashq)
	}
	j.wg.Wait()
	return nil
}

// fetch fetches the job's stTodo blocks, one request per run of them, and queues each block for
// hashing as soon as it has arrived. On an error it records the block that broke and stops.
func (c *copier) fetch(ctx context.Context, j *job, hashq chan<- hashTask) {
	for k := 0; k < j.n; {
		if j.state[k] != stTodo {
			k++
			continue
		}
		e := k
		for e < j.n && j.state[e] == stTodo {
			e++
		}
		if err := c.fetchRange(ctx, j, k, e, hashq); err != nil {
			j.err = err
			return
		}
		k = e
	}
}

func (c *copier) fetchRange(ctx context.Context, j *job, lo, hi int, hashq chan<- hashTask) error {
	c.requests.Add(1)
	j.failAt = lo
	rc, err := c.src.OpenRange(ctx, c.m.Offset(j.first+lo), j.span(c, lo, hi))
	if err != nil {
		return err
	}
	defer rc.Close()
	for k := lo; k < hi; k++ {
		j.failAt = k
		b := j.block(c, k)
		n, err := io.ReadFull(rc, b)
		c.fetched.Add(int64(n))
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: range ended %d bytes into block %d", ErrShortSource, n, j.first+k)
		}
		if err != nil {
			return err
		}
		if !j.toHash(ctx, k, stFetched, hashq) {
			return ctx.Err()
		}
	}
	j.failAt = -1
	return nil
}

// testHashHook, when set by a test, runs inside the hashing section of every block.
var testHashHook func()

func (c *copier) hash(t hashTask) {
	j, k := t.j, t.k
	now := c.hashing.Add(1)
	for {
		m := c.maxHashing.Load()
		if now <= m || c.maxHashing.CompareAndSwap(m, now) {
			break
		}
	}
	start := time.Now()
	if testHashHook != nil {
		testHashHook()
	}
	sum := sha256.Sum256(j.block(c, k))
	c.hashNanos.Add(int64(time.Since(start)))
	c.hashing.Add(-1)

	want := c.m.Blocks[j.first+k].SHA256
	switch j.state[k] {
	case stTarget:
		if sum == want {
			j.state[k] = stSame
		} else {
			j.state[k] = stTodo
		}
	case stFetched:
		if sum == want {
			j.state[k] = stGood
		} else {
			j.state[k] = stBad
			j.got[k] = sum
		}
	}
	j.wg.Done()
}

// write waits for the job's hashes, writes its verified blocks (adjacent ones in one write) and
// queues the rest again: a bad block alone, a broken-off range from the block that broke on.
func (c *copier) write(ctx context.Context, q *queue, j *job) {
	j.wg.Wait()
	var again []*job
	var err error
	for k := 0; k < j.n && err == nil && ctx.Err() == nil; {
		e := k + 1
		for e < j.n && j.state[e] == j.state[k] && j.state[k] != stBad {
			e++
		}
		first := j.first + k
		switch j.state[k] {
		case stGood:
			n := j.span(c, k, e)
			if err = c.d.writeAt(j.buf[k*images.BlockSize:int64(k*images.BlockSize)+n], c.m.Offset(first)); err == nil {
				c.written.Add(n)
				c.verified.Add(int64(e - k))
			}
		case stSame:
			c.skippedSame.Add(j.span(c, k, e))
			c.same.Add(int64(e - k))
		case stBad:
			cerr := &ChecksumError{Block: int64(first), Want: c.m.Blocks[first].SHA256, Got: j.got[k]}
			var r *job
			if r, err = q.retry(first, 1, first, cerr); r != nil {
				again = append(again, r)
			}
		case stTodo:
			// Fetching broke off at failAt: that block is charged an attempt, those after it were
			// never sent and are asked again for free.
			// (A run left unfetched by a job that recorded no failure would be a bug; charging it
			// keeps even that from retrying for ever.)
			penalized := -1
			switch {
			case j.failAt >= k && j.failAt < e:
				penalized = j.first + j.failAt
			case j.failAt < 0:
				penalized = first
			}
			var r *job
			if r, err = q.retry(first, e-k, penalized, j.err); r != nil {
				again = append(again, r)
			}
		}
		k = e
	}
	c.pool.put(j.buf)
	j.buf, j.state, j.got = nil, nil, nil
	q.finish(again, err)
}

// zero handles a run of zero blocks on a target not known to be zero. In delta mode it reads the
// run first and zeroes only the blocks that are not zero already.
func (c *copier) zero(ctx context.Context, j *job) error {
	off, n := c.m.Offset(j.first), j.span(c, 0, j.n)
	if !c.opt.Delta {
		if err := c.d.zero(off, n); err != nil {
			return err
		}
		c.zeroed.Add(n)
		return nil
	}
	buf, err := c.pool.get(ctx)
	if err != nil {
		return nil // cancelled: run reports it
	}
	defer c.pool.put(buf)
	got, err := c.d.t.ReadAt(buf[:n], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("blockcopy: delta: read target at %d: %w", off, err)
	}
	for k := 0; k < j.n; {
		bo, bl := int64(k)*images.BlockSize, c.m.Len(j.first+k)
		if bo+bl <= int64(got) && images.IsZero(buf[bo:bo+bl]) {
			c.skippedSame.Add(bl)
			c.same.Add(1)
			k++
			continue
		}
		e := k + 1
		for e < j.n && !(int64(e)*images.BlockSize+c.m.Len(j.first+e) <= int64(got) && images.IsZero(buf[int64(e)*images.BlockSize:][:c.m.Len(j.first+e)])) {
			e++
		}
		zn := j.span(c, k, e)
		if err := c.d.zero(c.m.Offset(j.first+k), zn); err != nil {
			return err
		}
		c.zeroed.Add(zn)
		k = e
	}
	return nil
}
