// Package cloud publishes imaged's image artifacts to AWS: the very blob a blade runs becomes an
// EBS snapshot through the EBS direct APIs (its 512 KiB manifest blocks are EBS's blocks, their
// SHA-256 EBS's checksums), then an AMI. Only cmd/imaged imports it.
package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/images"
)

// EBS is the part of the EBS direct APIs client a push uses (*ebs.Client).
type EBS interface {
	StartSnapshot(ctx context.Context, in *ebs.StartSnapshotInput, opts ...func(*ebs.Options)) (*ebs.StartSnapshotOutput, error)
	PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, opts ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error)
	CompleteSnapshot(ctx context.Context, in *ebs.CompleteSnapshotInput, opts ...func(*ebs.Options)) (*ebs.CompleteSnapshotOutput, error)
}

// PushOptions tune a snapshot push. Zero values take the defaults.
type PushOptions struct {
	Workers        int               // blocks in flight (64)
	AttemptTimeout time.Duration     // one PutSnapshotBlock (30 s)
	MaxAttempts    int               // per block, throttling and 5xx included (10)
	Backoff        time.Duration     // first wait after a throttle, doubling to 20 s, full jitter (100 ms)
	MaxRate        float64           // PutSnapshotBlock requests per second at most (1000, EBS's per-snapshot quota)
	ClientToken    string            // StartSnapshot idempotency: the same token resumes the same snapshot
	Tags           map[string]string // on the snapshot
	Description    string
	// Journal is a file that records the blocks EBS accepted: a push interrupted while its
	// snapshot is pending resumes from it (same ClientToken) without sending them again. EBS
	// cannot tell which blocks a pending snapshot holds, so the journal is the only record.
	// Removed once the snapshot is complete. "" keeps none.
	Journal  string
	Progress func(done, total int) // blocks accepted so far, of the non-zero blocks; never called concurrently
}

// PushResult describes a pushed snapshot.
type PushResult struct {
	SnapshotID  string
	Blocks      int // non-zero blocks in the snapshot
	Sent        int // of them, sent by this push (the others were accepted before it was interrupted)
	Skipped     int // zero blocks not sent
	Retries     int // PutSnapshotBlock attempts repeated after throttling or a server error
	Throttled   int // of them, after throttling
	Aggregate   string
	Duration    time.Duration
	BytesPushed int64 // by this push
}

// ErrBlockChanged means the blob's bytes no longer match its manifest: nothing corrupt is sent.
var ErrBlockChanged = errors.New("cloud: blob block does not match the manifest")

// PushSnapshot writes the non-zero blocks of the image (src, described by m) into a new EBS
// snapshot and completes it with the block count and the LINEAR aggregate checksum. Each block
// is read, checked against the manifest's SHA-256 and sent with that checksum (base64); zero
// blocks are never sent (a new snapshot reads as zeros). Throttling and 5xx answers are retried
// per block with backoff, and throttling slows every worker down (see pacer); anything else
// stops the push. With a Journal, an interrupted push resumes where it stopped.
func PushSnapshot(ctx context.Context, c EBS, src io.ReaderAt, m *images.Manifest, opt PushOptions) (PushResult, error) {
	start := time.Now()
	if opt.Workers <= 0 {
		opt.Workers = 64
	}
	if opt.AttemptTimeout <= 0 {
		opt.AttemptTimeout = 30 * time.Second
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 10
	}
	if opt.Backoff <= 0 {
		opt.Backoff = 100 * time.Millisecond
	}
	if opt.MaxRate <= 0 {
		opt.MaxRate = 1000
	}
	var res PushResult
	// The checksum EBS gets for each non-zero block: the manifest's, except for a short last
	// block, which EBS stores padded with zeros to 512 KiB.
	var todo []int
	sums := make([][]byte, len(m.Blocks))
	for i, b := range m.Blocks {
		switch {
		case b.Zero:
			res.Skipped++
			continue
		case m.Len(i) == images.BlockSize:
			sums[i] = b.SHA256[:]
		default:
			buf := make([]byte, images.BlockSize)
			if err := readBlock(src, m, i, buf); err != nil {
				return res, err
			}
			sum := sha256.Sum256(buf)
			sums[i] = sum[:]
		}
		todo = append(todo, i)
	}
	res.Blocks = len(todo)

	j, err := openJournal(ctx, c, m, opt)
	if err != nil {
		return res, err
	}
	defer j.close()
	res.SnapshotID = j.snapshot
	if j.completed {
		res.Aggregate, res.Duration = aggregate(sums), time.Since(start)
		return res, j.remove()
	}
	var send []int
	for _, i := range todo {
		if !j.accepted[i] {
			send = append(send, i)
		}
	}
	resumed := len(todo) - len(send)
	if opt.Progress != nil && resumed > 0 {
		opt.Progress(resumed, len(todo))
	}

	var done, retries, throttled atomic.Int64
	var progressMu sync.Mutex
	done.Store(int64(resumed))
	pace := newPacer(opt.MaxRate)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opt.Workers)
	// One 512 KiB buffer per block in flight, reused: memory stays Workers × 512 KiB.
	pool := sync.Pool{New: func() any { return new([images.BlockSize]byte) }}
	for _, i := range send {
		g.Go(func() error {
			arr := pool.Get().(*[images.BlockSize]byte)
			defer pool.Put(arr)
			buf := arr[:]
			if err := readBlock(src, m, i, buf); err != nil {
				return err
			}
			r, t, err := putBlock(gctx, c, pace, res.SnapshotID, i, buf, sums[i], opt)
			retries.Add(int64(r))
			throttled.Add(int64(t))
			if err != nil {
				return err
			}
			if err := j.accept(i); err != nil {
				return err
			}
			if opt.Progress != nil {
				progressMu.Lock() // one call at a time, counts ascending
				opt.Progress(int(done.Add(1)), len(todo))
				progressMu.Unlock()
			} else {
				done.Add(1)
			}
			return nil
		})
	}
	err = g.Wait()
	res.Sent, res.Retries, res.Throttled = len(send), int(retries.Load()), int(throttled.Load())
	if err != nil {
		res.Sent = int(done.Load()) - resumed
		return res, err
	}
	res.BytesPushed = int64(len(send)) * images.BlockSize
	res.Aggregate = aggregate(sums)
	if _, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId: aws.String(res.SnapshotID), ChangedBlocksCount: aws.Int32(int32(len(todo))),
		Checksum: aws.String(res.Aggregate), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	}); err != nil {
		return res, fmt.Errorf("cloud: complete snapshot %s: %w", res.SnapshotID, err)
	}
	res.Duration = time.Since(start)
	return res, j.remove()
}

// readBlock reads block i into buf (512 KiB), zero-padding a short last block, and checks it
// against the manifest.
func readBlock(src io.ReaderAt, m *images.Manifest, i int, buf []byte) error {
	want := m.Len(i)
	clear(buf[want:])
	n, err := src.ReadAt(buf[:want], m.Offset(i))
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == want) {
		return fmt.Errorf("cloud: read block %d: %w", i, err)
	}
	if sha256.Sum256(buf[:want]) != m.Blocks[i].SHA256 {
		return fmt.Errorf("%w: block %d (offset %d)", ErrBlockChanged, i, m.Offset(i))
	}
	return nil
}

// aggregate is the LINEAR checksum: SHA-256 over the blocks' raw SHA-256s in ascending block
// index order (zero blocks, never written, take no part).
func aggregate(sums [][]byte) string {
	agg := sha256.New()
	for _, s := range sums {
		agg.Write(s)
	}
	return base64.StdEncoding.EncodeToString(agg.Sum(nil))
}

// putBlock sends one block, retrying throttling and server errors; it returns the retries and
// how many of them followed throttling.
func putBlock(ctx context.Context, c EBS, pace *pacer, snap string, i int, data, sum []byte, opt PushOptions) (retries, throttled int, err error) {
	backoff := opt.Backoff
	for attempt := 1; ; attempt++ {
		if err := pace.wait(ctx); err != nil {
			return attempt - 1, throttled, err
		}
		actx, cancel := context.WithTimeout(ctx, opt.AttemptTimeout)
		_, err := c.PutSnapshotBlock(actx, &ebs.PutSnapshotBlockInput{
			SnapshotId: aws.String(snap), BlockIndex: aws.Int32(int32(i)), BlockData: bytes.NewReader(data),
			DataLength: aws.Int32(images.BlockSize), Checksum: aws.String(base64.StdEncoding.EncodeToString(sum)),
			ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		})
		cancel()
		if err == nil {
			pace.ok()
			return attempt - 1, throttled, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == opt.MaxAttempts {
			return attempt - 1, throttled, fmt.Errorf("cloud: put block %d of %s (attempt %d): %w", i, snap, attempt, err)
		}
		wait := backoff
		switch reason := throttleReason(err); reason {
		case "":
		case string(ebstypes.RequestThrottledExceptionReasonDependencyRequestThrottled):
			// A service EBS depends on (KMS) was busy: this request only, no slower pace.
			throttled++
		case string(ebstypes.RequestThrottledExceptionReasonAccountThrottled):
			// The account's quota, shared with whatever else runs in it: slow down, and wait
			// longer than for this snapshot's own limit.
			throttled++
			pace.slow()
			wait = 4 * backoff
		default: // RESOURCE_LEVEL_THROTTLE (this snapshot's request rate), ThrottlingException, SlowDown
			throttled++
			pace.slow()
		}
		select {
		case <-ctx.Done():
			return attempt - 1, throttled, ctx.Err()
		case <-time.After(rand.N(wait + 1)): // full jitter: blocks throttled together do not return together
		}
		backoff = min(2*backoff, 20*time.Second)
	}
}

// throttleReason is the reason of a throttling error ("" when err is no throttling): EBS's
// RequestThrottledException reason, or the code of another service's throttling error.
func throttleReason(err error) string {
	var thr *ebstypes.RequestThrottledException
	if errors.As(err, &thr) {
		if thr.Reason == "" {
			return "THROTTLED"
		}
		return string(thr.Reason)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "RequestLimitExceeded", "SlowDown", "TooManyRequestsException":
			return ae.ErrorCode()
		}
	}
	return ""
}

// pacer spaces the workers' requests out to a shared rate, which starts at the quota, drops by
// a sixth on throttling (at most every 100 ms, so one burst of throttled answers counts once) and
// climbs back by a two-thousandth of the quota per accepted block: a push settles just under
// whatever limit it meets instead of spending requests on being refused.
type pacer struct {
	mu        sync.Mutex
	rate, max float64
	next, cut time.Time
}

func newPacer(max float64) *pacer { return &pacer{rate: max, max: max} }

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(time.Duration(float64(time.Second) / p.rate))
	p.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (p *pacer) slow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.cut) > 100*time.Millisecond {
		p.rate, p.cut = max(p.rate*5/6, 1), now
	}
}

func (p *pacer) ok() {
	p.mu.Lock()
	p.rate = min(p.max, p.rate+p.max/2000)
	p.mu.Unlock()
}

// retryable tells throttling, server errors and timeouts (worth another attempt) from the
// refusals of a bad request.
func retryable(err error) bool {
	var thr *ebstypes.RequestThrottledException
	var internal *ebstypes.InternalServerException
	if errors.As(err, &thr) || errors.As(err, &internal) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable", "SlowDown", "InternalFailure":
			return true
		}
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && (re.HTTPStatusCode() >= 500 || re.HTTPStatusCode() == 429) {
		return true
	}
	return false
}
