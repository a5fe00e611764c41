package cloud

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
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
		for j := range blk {
			blk[j] = byte(rng.Uint32())
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

// Under throttling on a fifth of the puts, no block is lost and the aggregate still checks out.
func TestPushSnapshotThrottled(t *testing.T) {
	img, m := halfZero(t, 64)
	f := awsfake.New(awsfake.Options{Seed: 7})
	f.InjectFault(awsfake.Fault{Operation: "PutSnapshotBlock", Kind: awsfake.FaultThrottle, Reason: "ACCOUNT_THROTTLED", Probability: 0.2})
	srv := f.Start(t)
	res, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m, PushOptions{Workers: 16, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nz, _ := m.NonZero()
	s, _ := f.Snapshot(res.SnapshotID)
	if res.Retries == 0 || len(s.Blocks) != nz || s.ChangedBlocksCount != int32(nz) {
		t.Errorf("retries %d, blocks %d of %d, count %d", res.Retries, len(s.Blocks), nz, s.ChangedBlocksCount)
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
