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
	ClientToken    string            // StartSnapshot idempotency: the same token resumes the same snapshot
	Tags           map[string]string // on the snapshot
	Description    string
	Progress       func(done, total int) // blocks accepted so far, of the non-zero blocks
}

// PushResult describes a pushed snapshot.
type PushResult struct {
	SnapshotID  string
	Blocks      int // non-zero blocks sent (and accepted)
	Skipped     int // zero blocks not sent
	Retries     int // PutSnapshotBlock attempts repeated after throttling or a server error
	Aggregate   string
	Duration    time.Duration
	BytesPushed int64
}

// ErrBlockChanged means the blob's bytes no longer match its manifest: nothing corrupt is sent.
var ErrBlockChanged = errors.New("cloud: blob block does not match the manifest")

// PushSnapshot writes the non-zero blocks of the image (src, described by m) into a new EBS
// snapshot and completes it with the block count and the LINEAR aggregate checksum. Each block
// is read, checked against the manifest's SHA-256 and sent with that checksum (base64); zero
// blocks are never sent (a new snapshot reads as zeros). Throttling and 5xx answers are retried
// per block with backoff; anything else stops the push.
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
	gib := int64(1) << 30
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64((m.Size + gib - 1) / gib), Timeout: aws.Int32(60)}
	if opt.ClientToken != "" {
		in.ClientToken = aws.String(opt.ClientToken)
	}
	if opt.Description != "" {
		in.Description = aws.String(opt.Description)
	}
	for k, v := range opt.Tags {
		in.Tags = append(in.Tags, ebstypes.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := c.StartSnapshot(ctx, in)
	if err != nil {
		return PushResult{}, fmt.Errorf("cloud: start snapshot: %w", err)
	}
	res := PushResult{SnapshotID: aws.ToString(out.SnapshotId)}

	var todo []int
	for i, b := range m.Blocks {
		if b.Zero {
			res.Skipped++
		} else {
			todo = append(todo, i)
		}
	}
	sums := make([][]byte, len(m.Blocks)) // the checksum EBS got for each block sent
	var done, retries atomic.Int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opt.Workers)
	// One 512 KiB buffer per block in flight, reused: memory stays Workers × 512 KiB.
	pool := sync.Pool{New: func() any { return new([images.BlockSize]byte) }}
	for _, i := range todo {
		g.Go(func() error {
			arr := pool.Get().(*[images.BlockSize]byte)
			defer pool.Put(arr)
			buf := arr[:]
			clear(buf) // EBS blocks are always 524288 bytes: a short last block's tail is zeros
			n, err := src.ReadAt(buf[:min(int64(images.BlockSize), m.Size-m.Offset(i))], m.Offset(i))
			if err != nil && !(errors.Is(err, io.EOF) && int64(n) == m.Size-m.Offset(i)) {
				return fmt.Errorf("cloud: read block %d: %w", i, err)
			}
			if sha256.Sum256(buf[:n]) != m.Blocks[i].SHA256 {
				return fmt.Errorf("%w: block %d (offset %d)", ErrBlockChanged, i, m.Offset(i))
			}
			sum := sha256.Sum256(buf) // of the padded block, which is what EBS stores
			r, err := putBlock(gctx, c, res.SnapshotID, i, buf, sum[:], opt)
			retries.Add(int64(r))
			if err != nil {
				return err
			}
			mu.Lock()
			sums[i] = sum[:]
			mu.Unlock()
			d := done.Add(1)
			if opt.Progress != nil {
				opt.Progress(int(d), len(todo))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.Blocks, res.Retries = len(todo), int(retries.Load())
	res.BytesPushed = int64(len(todo)) * images.BlockSize
	// LINEAR: SHA-256 over the blocks' raw SHA-256s in ascending block index order.
	agg := sha256.New()
	for _, s := range sums {
		agg.Write(s)
	}
	res.Aggregate = base64.StdEncoding.EncodeToString(agg.Sum(nil))
	if _, err := c.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId: aws.String(res.SnapshotID), ChangedBlocksCount: aws.Int32(int32(len(todo))),
		Checksum: aws.String(res.Aggregate), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	}); err != nil {
		return res, fmt.Errorf("cloud: complete snapshot %s: %w", res.SnapshotID, err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// putBlock sends one block, retrying throttling and server errors; it returns the retries.
func putBlock(ctx context.Context, c EBS, snap string, i int, data, sum []byte, opt PushOptions) (int, error) {
	backoff := opt.Backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, opt.AttemptTimeout)
		_, err := c.PutSnapshotBlock(actx, &ebs.PutSnapshotBlockInput{
			SnapshotId: aws.String(snap), BlockIndex: aws.Int32(int32(i)), BlockData: bytes.NewReader(data),
			DataLength: aws.Int32(images.BlockSize), Checksum: aws.String(base64.StdEncoding.EncodeToString(sum)),
			ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		})
		cancel()
		if err == nil {
			return attempt - 1, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == opt.MaxAttempts {
			return attempt - 1, fmt.Errorf("cloud: put block %d of %s (attempt %d): %w", i, snap, attempt, err)
		}
		wait := rand.N(backoff + 1) // full jitter: blocks throttled together do not return together
		select {
		case <-ctx.Done():
			return attempt - 1, ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 20*time.Second)
	}
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
