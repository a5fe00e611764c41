package awsfake_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

func startSnapshot(t *testing.T, e *env, gib int64) string {
	t.Helper()
	out, err := e.ebs.StartSnapshot(t.Context(), &ebs.StartSnapshotInput{
		VolumeSize: aws.Int64(gib),
		Tags:       []ebstypes.Tag{{Key: aws.String("imaged:digest"), Value: aws.String("sha256:abc")}},
		Timeout:    aws.Int32(60),
	})
	if err != nil {
		t.Fatalf("StartSnapshot: %v", err)
	}
	if out.Status != ebstypes.StatusPending || aws.ToInt32(out.BlockSize) != awsfake.BlockSize {
		t.Fatalf("StartSnapshot: status %q block size %d", out.Status, aws.ToInt32(out.BlockSize))
	}
	return aws.ToString(out.SnapshotId)
}

func putBlock(t *testing.T, e *env, id string, index int32, data []byte) error {
	t.Helper()
	_, err := e.ebs.PutSnapshotBlock(t.Context(), &ebs.PutSnapshotBlockInput{
		SnapshotId:        aws.String(id),
		BlockIndex:        aws.Int32(index),
		BlockData:         bytes.NewReader(data),
		DataLength:        aws.Int32(int32(len(data))),
		Checksum:          aws.String(sum64(data)),
		ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
	})
	return err
}

func complete(t *testing.T, e *env, id string, count int32, aggregate string) error {
	t.Helper()
	_, err := e.ebs.CompleteSnapshot(t.Context(), &ebs.CompleteSnapshotInput{
		SnapshotId:                aws.String(id),
		ChangedBlocksCount:        aws.Int32(count),
		Checksum:                  aws.String(aggregate),
		ChecksumAlgorithm:         ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	})
	return err
}

func snapshotState(t *testing.T, e *env, id string) (state, progress string) {
	t.Helper()
	out, err := e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if err != nil {
		t.Fatalf("DescribeSnapshots: %v", err)
	}
	if len(out.Snapshots) != 1 {
		t.Fatalf("DescribeSnapshots: %d snapshots", len(out.Snapshots))
	}
	return string(out.Snapshots[0].State), aws.ToString(out.Snapshots[0].Progress)
}

// pushed starts a 1 GiB snapshot and writes blocks 0, 5 and 2047 (written out
// of order), returning the snapshot and the blocks in index order.
func pushed(t *testing.T, e *env) (string, [][]byte) {
	t.Helper()
	id := startSnapshot(t, e, 1)
	blocks := [][]byte{block(1), block(2), block(3)}
	for i, idx := range []int32{2047, 0, 5} {
		if err := putBlock(t, e, id, idx, blocks[(i+2)%3]); err != nil {
			t.Fatalf("PutSnapshotBlock %d: %v", idx, err)
		}
	}
	// blocks[(i+2)%3]: 2047 ← blocks[2], 0 ← blocks[0], 5 ← blocks[1].
	return id, blocks
}

func TestPushCompletes(t *testing.T) {
	e := newEnv(t, awsfake.Options{SnapshotCompletionDelay: 5 * time.Second})
	id, blocks := pushed(t, e)
	if err := complete(t, e, id, 3, linear(blocks...)); err != nil {
		t.Fatalf("CompleteSnapshot: %v", err)
	}
	if st, _ := snapshotState(t, e, id); st != "pending" {
		t.Fatalf("right after CompleteSnapshot: state %q, want pending", st)
	}
	e.clock.Advance(5 * time.Second)
	if st, p := snapshotState(t, e, id); st != "completed" || p != "100%" {
		t.Fatalf("after the completion delay: state %q progress %q, want completed 100%%", st, p)
	}
	s, _ := e.fake.Snapshot(id)
	if len(s.Blocks) != 3 || !bytes.Equal(s.Blocks[5].Data, blocks[1]) || s.AggregateChecksum != linear(blocks...) {
		t.Errorf("recorded snapshot: %d blocks, aggregate %q", len(s.Blocks), s.AggregateChecksum)
	}
	if s.Tags["imaged:digest"] != "sha256:abc" {
		t.Errorf("tags %v", s.Tags)
	}
	// A completed snapshot takes no more blocks.
	err := putBlock(t, e, id, 1, block(9))
	var ve *ebstypes.ValidationException
	if !errors.As(err, &ve) {
		t.Errorf("PutSnapshotBlock on a completed snapshot: %v, want ValidationException", err)
	}
	if n := e.fake.RequestCount("PutSnapshotBlock"); n != 4 {
		t.Errorf("PutSnapshotBlock requests: %d, want 4", n)
	}
}

func TestPutSnapshotBlockRefused(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	id := startSnapshot(t, e, 1)
	good := block(7)
	short := good[:4096]
	tests := []struct {
		name   string
		in     ebs.PutSnapshotBlockInput
		reason ebstypes.ValidationExceptionReason
	}{
		{"wrong checksum", ebs.PutSnapshotBlockInput{
			BlockIndex: aws.Int32(0), BlockData: bytes.NewReader(good), DataLength: aws.Int32(awsfake.BlockSize),
			Checksum: aws.String(sum64(block(8))), ChecksumAlgorithm: "SHA256"}, "INVALID_PARAMETER_VALUE"},
		{"short block", ebs.PutSnapshotBlockInput{
			BlockIndex: aws.Int32(0), BlockData: bytes.NewReader(short), DataLength: aws.Int32(int32(len(short))),
			Checksum: aws.String(sum64(short)), ChecksumAlgorithm: "SHA256"}, "INVALID_PARAMETER_VALUE"},
		{"body shorter than DataLength", ebs.PutSnapshotBlockInput{
			BlockIndex: aws.Int32(0), BlockData: bytes.NewReader(short), DataLength: aws.Int32(awsfake.BlockSize),
			Checksum: aws.String(sum64(short)), ChecksumAlgorithm: "SHA256"}, "INVALID_PARAMETER_VALUE"},
		{"index past the volume", ebs.PutSnapshotBlockInput{
			BlockIndex: aws.Int32(2048), BlockData: bytes.NewReader(good), DataLength: aws.Int32(awsfake.BlockSize),
			Checksum: aws.String(sum64(good)), ChecksumAlgorithm: "SHA256"}, "INVALID_BLOCK"},
		{"not SHA256", ebs.PutSnapshotBlockInput{
			BlockIndex: aws.Int32(0), BlockData: bytes.NewReader(good), DataLength: aws.Int32(awsfake.BlockSize),
			Checksum: aws.String(sum64(good)), ChecksumAlgorithm: "MD5"}, "INVALID_PARAMETER_VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.SnapshotId = aws.String(id)
			_, err := e.ebs.PutSnapshotBlock(t.Context(), &in)
			var ve *ebstypes.ValidationException
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want ValidationException", err)
			}
			if ve.Reason != tt.reason {
				t.Errorf("Reason %q, want %q (message %q)", ve.Reason, tt.reason, aws.ToString(ve.Message))
			}
		})
	}
	if s, _ := e.fake.Snapshot(id); len(s.Blocks) != 0 {
		t.Errorf("refused blocks were stored: %d", len(s.Blocks))
	}
	// Unknown snapshot: ResourceNotFoundException.
	err := putBlock(t, e, "snap-00000000000000bad", 0, good)
	var nf *ebstypes.ResourceNotFoundException
	if !errors.As(err, &nf) || nf.Reason != "SNAPSHOT_NOT_FOUND" {
		t.Errorf("unknown snapshot: %v", err)
	}
}

func TestCompleteSnapshotRefused(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	id, blocks := pushed(t, e)
	unordered := linear(blocks[2], blocks[0], blocks[1])
	for _, tt := range []struct {
		name      string
		count     int32
		aggregate string
	}{
		{"wrong ChangedBlocksCount", 2, linear(blocks...)},
		{"aggregate not in index order", 3, unordered},
		{"aggregate of other data", 3, linear(block(1), block(2), block(4))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := complete(t, e, id, tt.count, tt.aggregate)
			var ve *ebstypes.ValidationException
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want ValidationException", err)
			}
		})
	}
	if st, _ := snapshotState(t, e, id); st != "pending" {
		t.Fatalf("refused completions changed the state to %q", st)
	}
	if err := complete(t, e, id, 3, linear(blocks...)); err != nil {
		t.Fatalf("correct completion after refusals: %v", err)
	}
	if st, _ := snapshotState(t, e, id); st != "completed" {
		t.Errorf("state %q, want completed (zero delay)", st)
	}
}

func TestStartSnapshotRules(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	_, err := e.ebs.StartSnapshot(t.Context(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(0)})
	var ve *ebstypes.ValidationException
	if !errors.As(err, &ve) || ve.Reason != "INVALID_VOLUME_SIZE" {
		t.Errorf("VolumeSize 0: %v, want ValidationException INVALID_VOLUME_SIZE", err)
	}
	in := &ebs.StartSnapshotInput{VolumeSize: aws.Int64(8), ClientToken: aws.String("push-1")}
	a, err := e.ebs.StartSnapshot(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.ebs.StartSnapshot(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(a.SnapshotId) != aws.ToString(b.SnapshotId) {
		t.Errorf("same ClientToken gave %s and %s", aws.ToString(a.SnapshotId), aws.ToString(b.SnapshotId))
	}
	_, err = e.ebs.StartSnapshot(t.Context(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(9), ClientToken: aws.String("push-1")})
	var ce *ebstypes.ConflictException
	if !errors.As(err, &ce) {
		t.Errorf("same ClientToken, other size: %v, want ConflictException", err)
	}
	// A pending snapshot with no writes for Timeout minutes goes to error.
	e.clock.Advance(61 * time.Minute)
	if st, _ := snapshotState(t, e, aws.ToString(a.SnapshotId)); st != "error" {
		t.Errorf("after the timeout: state %q, want error", st)
	}
}

func TestThrottling(t *testing.T) {
	e := newEnv(t, awsfake.Options{BlockRateLimit: 2})
	id := startSnapshot(t, e, 1)

	e.fake.InjectFault(awsfake.Fault{Operation: "PutSnapshotBlock", Kind: awsfake.FaultThrottle,
		Reason: "DEPENDENCY_REQUEST_THROTTLED", Count: 1})
	err := putBlock(t, e, id, 0, block(1))
	var te *ebstypes.RequestThrottledException
	if !errors.As(err, &te) || te.Reason != "DEPENDENCY_REQUEST_THROTTLED" || httpStatus(t, err) != 400 {
		t.Fatalf("injected throttle: %v, want RequestThrottledException DEPENDENCY_REQUEST_THROTTLED (400)", err)
	}

	e.fake.InjectFault(awsfake.Fault{Operation: "PutSnapshotBlock", Kind: awsfake.FaultThrottling429, Count: 1})
	err = putBlock(t, e, id, 0, block(1))
	if code := apiCode(t, err); code != "ThrottlingException" || httpStatus(t, err) != 429 {
		t.Fatalf("429: code %q status %d", code, httpStatus(t, err))
	}

	// The clock is frozen, so the per-snapshot bucket (2/s) does not refill:
	// two writes pass, the third is throttled at the resource level.
	for i := range int32(2) {
		if err := putBlock(t, e, id, i, block(1)); err != nil {
			t.Fatalf("write %d within the rate: %v", i, err)
		}
	}
	err = putBlock(t, e, id, 2, block(1))
	if !errors.As(err, &te) || te.Reason != "RESOURCE_LEVEL_THROTTLE" {
		t.Fatalf("over the per-snapshot rate: %v, want RESOURCE_LEVEL_THROTTLE", err)
	}
	e.clock.Advance(time.Second)
	if err := putBlock(t, e, id, 2, block(1)); err != nil {
		t.Fatalf("after the bucket refilled: %v", err)
	}

	e.fake.InjectFault(awsfake.Fault{Operation: "DescribeSnapshots", Kind: awsfake.FaultThrottle, Count: 1})
	_, err = e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{})
	if code := apiCode(t, err); code != "RequestLimitExceeded" || httpStatus(t, err) != 503 {
		t.Fatalf("EC2 throttle: code %q status %d", code, httpStatus(t, err))
	}
	e.fake.InjectFault(awsfake.Fault{Kind: awsfake.FaultUnavailable, Count: 1})
	_, err = e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{})
	if httpStatus(t, err) != 503 {
		t.Fatalf("plain 503: %v", err)
	}
	if _, err := e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{}); err != nil {
		t.Fatalf("Count faults are spent: %v", err)
	}
}

// TestThrottleRetried shows the SDK's standard retryer treats the fake's
// throttles as retryable, as it would AWS's.
func TestThrottleRetried(t *testing.T) {
	e := newEnv(t, awsfake.Options{Faults: []awsfake.Fault{
		{Operation: "StartSnapshot", Kind: awsfake.FaultThrottle, Reason: "ACCOUNT_THROTTLED", Count: 2},
	}})
	client := ebs.NewFromConfig(e.config("us-east-1"), func(o *ebs.Options) {
		o.BaseEndpoint = aws.String(e.url)
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	if _, err := client.StartSnapshot(t.Context(), &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1)}); err != nil {
		t.Fatalf("StartSnapshot with retries: %v", err)
	}
	if n := e.fake.RequestCount("StartSnapshot"); n != 3 {
		t.Errorf("StartSnapshot requests: %d, want 3", n)
	}
}

func TestSeededFaultsAreDeterministic(t *testing.T) {
	run := func() []bool {
		e := newEnv(t, awsfake.Options{Seed: 42, Faults: []awsfake.Fault{
			{Operation: "DescribeSnapshots", Kind: awsfake.FaultThrottle, Probability: 0.5},
		}})
		var got []bool
		for range 20 {
			_, err := e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{})
			got = append(got, err != nil)
		}
		return got
	}
	a, b := run(), run()
	failed := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("runs with the same seed differ at request %d", i)
		}
		if a[i] {
			failed++
		}
	}
	if failed == 0 || failed == len(a) {
		t.Errorf("%d of %d requests failed at probability 0.5", failed, len(a))
	}
}

func TestLatency(t *testing.T) {
	e := newEnv(t, awsfake.Options{Latency: 20 * time.Millisecond})
	start := time.Now()
	if _, err := e.ec2.DescribeSnapshots(t.Context(), &ec2.DescribeSnapshotsInput{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("request took %v, want at least the 20ms latency", d)
	}
}

// BlockRateBurst bounds the bucket: with 100/s and a burst of 3, three writes pass at once, the
// fourth is throttled, and 10 ms later one more fits.
func TestThrottlingBurst(t *testing.T) {
	e := newEnv(t, awsfake.Options{BlockRateLimit: 100, BlockRateBurst: 3})
	id := startSnapshot(t, e, 1)
	for i := range int32(3) {
		if err := putBlock(t, e, id, i, block(1)); err != nil {
			t.Fatalf("write %d within the burst: %v", i, err)
		}
	}
	var te *ebstypes.RequestThrottledException
	if err := putBlock(t, e, id, 3, block(1)); !errors.As(err, &te) || te.Reason != "RESOURCE_LEVEL_THROTTLE" {
		t.Fatalf("past the burst: %v", err)
	}
	e.clock.Advance(10 * time.Millisecond)
	if err := putBlock(t, e, id, 3, block(1)); err != nil {
		t.Fatalf("after 10 ms at 100/s: %v", err)
	}
	if err := putBlock(t, e, id, 4, block(1)); err == nil {
		t.Fatal("a second write in the same 10 ms passed")
	}
}
