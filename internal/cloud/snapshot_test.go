package cloud

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// halfZero is an image of n blocks, every other run of blocks zero, and its manifest; its size is
// not a multiple of the block size, so the last block is short.
func halfZero(t *testing.T, n int) ([]byte, *images.Manifest) {
	t.Helper()
	img := make([]byte, n*images.BlockSize-4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		if i%4 < 2 {
			continue // zero
		}
		blk := img[i*images.BlockSize : min((i+1)*images.BlockSize, len(img))]
		for j := 0; j < len(blk); j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(blk[j:], w[:])
		}
	}
	b := images.NewBuilder()
	b.Write(img)
	m, err := b.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return img, m
}

func ebsClient(url string) *ebs.Client {
	return ebs.New(ebs.Options{BaseEndpoint: aws.String(url), Region: "us-east-1", Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
}

func TestPushSnapshot(t *testing.T) {
	img, m := halfZero(t, 64)
	f := awsfake.New(awsfake.Options{})
	srv := f.Start(t)
	var last int
	res, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m,
		PushOptions{Workers: 8, ClientToken: "tok-1", Tags: map[string]string{"imaged:digest": m.Digest.String()}, Progress: func(d, _ int) { last = d }})
	if err != nil {
		t.Fatal(err)
	}
	nz, _ := m.NonZero()
	if res.Blocks != nz || res.Skipped != len(m.Blocks)-nz || last != nz || f.RequestCount("PutSnapshotBlock") != nz {
		t.Errorf("result %+v, progress %d, %d puts; want %d non-zero blocks sent", res, last, f.RequestCount("PutSnapshotBlock"), nz)
	}
	s, ok := f.Snapshot(res.SnapshotID)
	if !ok || len(s.Blocks) != nz || s.ChangedBlocksCount != int32(nz) || s.AggregateChecksum != res.Aggregate || s.Tags["imaged:digest"] != m.Digest.String() {
		t.Fatalf("snapshot %+v", s)
	}
	// What EBS holds is the image: every non-zero block's bytes, the short last one padded.
	for i, b := range m.Blocks {
		got, ok := s.Blocks[int32(i)]
		if b.Zero != !ok {
			t.Fatalf("block %d: zero %v, sent %v", i, b.Zero, ok)
		}
		if ok {
			want := make([]byte, images.BlockSize)
			copy(want, img[m.Offset(i):min(m.Offset(i)+images.BlockSize, m.Size)])
			if !bytes.Equal(got.Data, want) {
				t.Fatalf("block %d differs", i)
			}
		}
	}
}

// Under throttling of every kind EBS answers with (each reason of RequestThrottledException, a
// 429 ThrottlingException) and 503s and 500s on a good part of the puts, no block is lost and the
// aggregate the fake checks at completion is valid.
func TestPushSnapshotThrottled(t *testing.T) {
	img, m := halfZero(t, 64)
	f := awsfake.New(awsfake.Options{Seed: 7})
	for _, ft := range []awsfake.Fault{
		{Kind: awsfake.FaultThrottle, Reason: "ACCOUNT_THROTTLED", Probability: 0.1},
		{Kind: awsfake.FaultThrottle, Reason: "RESOURCE_LEVEL_THROTTLE", Probability: 0.1},
		{Kind: awsfake.FaultThrottle, Reason: "DEPENDENCY_REQUEST_THROTTLED", Probability: 0.1},
		{Kind: awsfake.FaultThrottling429, Probability: 0.05},
		{Kind: awsfake.FaultUnavailable, Probability: 0.05},
		{Kind: awsfake.FaultInternal, Probability: 0.05},
	} {
		ft.Operation = "PutSnapshotBlock"
		f.InjectFault(ft)
	}
	srv := f.Start(t)
	res, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, PushOptions{Workers: 16, Backoff: time.Millisecond, MaxAttempts: 20})
	if err != nil {
		t.Fatal(err)
	}
	nz, _ := m.NonZero()
	s, _ := f.Snapshot(res.SnapshotID)
	if res.Retries < 10 || res.Throttled == 0 || res.Throttled >= res.Retries || len(s.Blocks) != nz || s.ChangedBlocksCount != int32(nz) ||
		s.State == "error" || s.AggregateChecksum != res.Aggregate {
		t.Errorf("retries %d (throttled %d), blocks %d of %d, count %d, state %s", res.Retries, res.Throttled, len(s.Blocks), nz, s.ChangedBlocksCount, s.State)
	}
}

// The pace shared by the workers: throttling lowers it (once per burst), accepted blocks raise it
// back, never above the quota.
func TestPacer(t *testing.T) {
	p := newPacer(1000)
	p.slow()
	p.slow() // the same burst
	if p.rate != 1000*5/6.0 {
		t.Errorf("after one burst of throttling: %.1f/s", p.rate)
	}
	for range 5000 {
		p.ok()
	}
	if p.rate != 1000 {
		t.Errorf("after 5000 accepted blocks: %.1f/s, want the quota", p.rate)
	}
}

// A blob that no longer matches its manifest is not sent, and nothing is completed.
func TestPushSnapshotRefusesChangedBlob(t *testing.T) {
	img, m := halfZero(t, 16)
	img[3*images.BlockSize+5] ^= 1
	f := awsfake.New(awsfake.Options{})
	srv := f.Start(t)
	_, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, PushOptions{})
	if !errors.Is(err, ErrBlockChanged) || f.RequestCount("CompleteSnapshot") != 0 {
		t.Errorf("err %v, completes %d", err, f.RequestCount("CompleteSnapshot"))
	}
}

// The case: a 1 GiB image, half of it zero, sends exactly its non-zero blocks, and the
// fake (checking every block's checksum and the aggregate) completes it.
func TestPushSnapshot1GiBHalfZero(t *testing.T) {
	img, m := halfZero(t, 2048)
	f := awsfake.New(awsfake.Options{DiscardBlockData: true})
	srv := f.Start(t)
	res, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := f.Snapshot(res.SnapshotID)
	if res.Blocks != 1024 || res.Sent != 1024 || res.Skipped != 1024 || f.RequestCount("PutSnapshotBlock") != 1024+res.Retries ||
		len(s.Blocks) != 1024 || s.VolumeSize != 1 || s.AggregateChecksum != res.Aggregate {
		t.Errorf("result %+v; %d puts; snapshot of %d GiB holds %d blocks", res, f.RequestCount("PutSnapshotBlock"), s.VolumeSize, len(s.Blocks))
	}
	for i := range s.Blocks {
		if m.Blocks[i].Zero {
			t.Fatalf("zero block %d was sent", i)
		}
	}
}

// A push interrupted half-way resumes from its journal: the second run sends only what the first
// did not get accepted, into the same snapshot, and completes it with a valid aggregate; the
// journal is gone afterwards.
func TestPushSnapshotResumes(t *testing.T) {
	img, m := halfZero(t, 256)
	nz, _ := m.NonZero()
	f := awsfake.New(awsfake.Options{})
	srv := f.Start(t)
	journal := filepath.Join(t.TempDir(), "push.journal")
	ctx, cancel := context.WithCancel(context.Background())
	opt := PushOptions{Workers: 4, ClientToken: "resume-1", Journal: journal, Progress: func(done, _ int) {
		if done == nz/2 {
			cancel()
		}
	}}
	first, err := PushSnapshot(ctx, ebsClient(srv.URL), bytes.NewReader(img), m, opt)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted push: %v", err)
	}
	if s, _ := f.Snapshot(first.SnapshotID); s.State != "pending" || len(s.Blocks) < nz/2 {
		t.Fatalf("after the interruption the snapshot is %s with %d blocks", s.State, len(s.Blocks))
	}
	puts := f.RequestCount("PutSnapshotBlock")
	opt.Progress = nil
	second, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, opt)
	if err != nil {
		t.Fatal(err)
	}
	// (A put the first run had in flight when it was cancelled may still reach the fake late.)
	again := f.RequestCount("PutSnapshotBlock") - puts
	if second.SnapshotID != first.SnapshotID || again < second.Sent || again > second.Sent+opt.Workers || second.Sent > nz-nz/2 || second.Blocks != nz {
		t.Errorf("resumed push %+v sent %d blocks (%d puts); want the same snapshot and at most %d blocks", second, second.Sent, again, nz-nz/2)
	}
	s, _ := f.Snapshot(second.SnapshotID)
	if len(s.Blocks) != nz || s.ChangedBlocksCount != int32(nz) || s.AggregateChecksum != second.Aggregate {
		t.Errorf("snapshot holds %d of %d blocks, count %d", len(s.Blocks), nz, s.ChangedBlocksCount)
	}
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal left behind: %v", err)
	}
}

// A journal whose snapshot timed out in EBS (state error) is not resumed: a fresh token starts a
// new snapshot and every block is sent to it.
func TestPushSnapshotAfterTimeout(t *testing.T) {
	img, m := halfZero(t, 32)
	nz, _ := m.NonZero()
	clk := awsfake.NewClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	f := awsfake.New(awsfake.Options{Now: clk.Now})
	srv := f.Start(t)
	journal := filepath.Join(t.TempDir(), "push.journal")
	ctx, cancel := context.WithCancel(context.Background())
	opt := PushOptions{Workers: 1, ClientToken: "timeout-1", Journal: journal, Progress: func(done, _ int) {
		if done == 3 {
			cancel()
		}
	}}
	first, _ := PushSnapshot(ctx, ebsClient(srv.URL), bytes.NewReader(img), m, opt)
	clk.Advance(61 * time.Minute) // past StartSnapshot's 60-minute timeout
	opt.Progress = nil
	second, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, opt)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := f.Snapshot(first.SnapshotID)
	s, _ := f.Snapshot(second.SnapshotID)
	if second.SnapshotID == first.SnapshotID || old.State != "error" || second.Sent != nz || len(s.Blocks) != nz || s.ClientToken != "timeout-1-2" {
		t.Errorf("first %s (%s), second %+v (token %q, %d blocks)", first.SnapshotID, old.State, second, s.ClientToken, len(s.Blocks))
	}
}
