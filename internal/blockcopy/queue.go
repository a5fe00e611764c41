package blockcopy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// queue hands out jobs: blocks queued again first, then the next run of the plan. It counts each
// block's failed attempts, and holds the copy's first fatal error.
type queue struct {
	c        *copier
	cancel   context.CancelCauseFunc
	stopWake func() bool

	mu       sync.Mutex
	cond     sync.Cond
	ctx      context.Context
	next     int // first block not yet planned
	end      int
	again    []*job
	inflight int
	err      error
	tries    map[int]int // failed attempts per block
}

func newQueue(ctx context.Context, c *copier, lo, hi int, cancel context.CancelCauseFunc) *queue {
	q := &queue{c: c, cancel: cancel, ctx: ctx, next: lo, end: hi, tries: map[int]int{}}
	q.cond.L = &q.mu
	q.stopWake = context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	return q
}

func (q *queue) stop() { q.stopWake() }

// take returns the next job, or false once every job is done or the copy has failed.
func (q *queue) take() (*job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.err != nil || q.ctx.Err() != nil {
			return nil, false
		}
		if len(q.again) > 0 {
			j := q.again[0]
			q.again = q.again[1:]
			q.inflight++
			return j, true
		}
		if j := q.plan(); j != nil {
			q.inflight++
			return j, true
		}
		if q.inflight == 0 {
			return nil, false
		}
		q.cond.Wait()
	}
}

// plan cuts the next run of blocks that are all zero or all non-zero. Zero runs on a target
// known to be zero are skipped here; other zero runs are large (one fallocate can zero 512 MiB)
// unless delta mode must read them into a buffer first.
func (q *queue) plan() *job {
	m := q.c.m
	for q.next < q.end {
		i := q.next
		zero := m.Blocks[i].Zero
		limit := q.c.blocks
		if zero && !q.c.opt.Delta {
			limit = 1024
		}
		e := i + 1
		for e < q.end && e-i < limit && m.Blocks[e].Zero == zero {
			e++
		}
		q.next = e
		if zero && q.c.opt.TargetZeroed {
			q.c.skippedZero.Add(m.Offset(e-1) + m.Len(e-1) - m.Offset(i))
			continue
		}
		return &job{first: i, n: e - i, zero: zero}
	}
	return nil
}

// finish ends a job taken with take, queues the jobs it left to do again, and records a fatal
// error (the first one wins and cancels the copy).
func (q *queue) finish(again []*job, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight--
	q.again = append(q.again, again...)
	if err != nil && q.err == nil {
		q.err = err
		q.cancel(err)
	}
	q.cond.Broadcast()
}

func (q *queue) failure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// retry makes a job of blocks [first, first+n) to fetch again, charging one failed attempt to
// block penalized (-1: none, those blocks were never sent). A block out of attempts, or an error
// that retrying cannot cure, is fatal.
func (q *queue) retry(first, n, penalized int, cause error) (*job, error) {
	if q.ctx.Err() != nil {
		return nil, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var delay time.Duration
	if penalized >= 0 {
		q.tries[penalized]++
		t := q.tries[penalized]
		limit := q.c.opt.Retries
		var ce *ChecksumError
		if errors.As(cause, &ce) {
			limit = q.c.opt.ChecksumRetries
		}
		if t > limit || !retryable(cause) {
			return nil, blockError(q.c, penalized, t, cause)
		}
		delay = q.c.opt.Backoff << (t - 1)
		if delay > 10*time.Second || delay <= 0 {
			delay = 10 * time.Second
		}
	}
	q.c.retries.Add(int64(n))
	return &job{first: first, n: n, compared: true, notBefore: time.Now().Add(delay)}, nil
}

func blockError(c *copier, block, attempts int, cause error) error {
	var ce *ChecksumError
	if errors.As(cause, &ce) {
		ce.Attempts = attempts
		return ce
	}
	return fmt.Errorf("blockcopy: block %d (offset %d), attempt %d: %w", block, c.m.Offset(block), attempts, cause)
}
