package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// The regions every channel test publishes to; the fake tells them apart by the SigV4 region.
var testRegions = []string{"ap-southeast-2", "eu-west-1", "us-east-1"}

// channelEnv is a fake AWS with a bucket for the contract and an EC2 client per region.
type channelEnv struct {
	fake    *awsfake.Fake
	clock   *awsfake.Clock
	url     string
	s3      *s3.Client
	clients map[string]*ec2.Client
	ec2s    map[string]ImagesEC2
	c       Contract
}

var testCreds = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")

func newChannelEnv(t *testing.T) *channelEnv {
	t.Helper()
	clk := awsfake.NewClock(time.Date(2026, 11, 4, 12, 0, 0, 0, time.UTC))
	f := awsfake.New(awsfake.Options{Now: clk.Now, Buckets: []string{"imaged-amis"}})
	srv := f.Start(t)
	e := &channelEnv{fake: f, clock: clk, url: srv.URL, clients: map[string]*ec2.Client{}, ec2s: map[string]ImagesEC2{}}
	e.s3 = s3.New(s3.Options{BaseEndpoint: aws.String(srv.URL), Region: "us-east-1", UsePathStyle: true,
		Retryer: aws.NopRetryer{}, Credentials: testCreds})
	for _, r := range testRegions {
		c := ec2.New(ec2.Options{BaseEndpoint: aws.String(srv.URL), Region: r, Retryer: aws.NopRetryer{}, Credentials: testCreds})
		e.clients[r], e.ec2s[r] = c, c
	}
	e.c = Contract{S3: e.s3, Bucket: "imaged-amis", Key: "imaged/amis.json"}
	return e
}

// publish makes a one-block image of name@version an AMI in us-east-1 (PublishAMI) and copies
// it, with its tags, into the other regions given; then an hour passes. It returns the image's
// digest and its AMI per region.
func (e *channelEnv) publish(t *testing.T, name, version string, regions ...string) (images.Digest, map[string]string) {
	t.Helper()
	ctx := t.Context()
	img := make([]byte, images.BlockSize)
	seed := sha256.Sum256([]byte(name + "@" + version))
	for i := range img {
		img[i] = seed[i%len(seed)] | 1
	}
	b := images.NewBuilder()
	b.Write(img)
	m, err := b.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	eb := ebs.New(ebs.Options{BaseEndpoint: aws.String(e.url), Region: "us-east-1", Retryer: aws.NopRetryer{}, Credentials: testCreds})
	pub, err := PublishAMI(ctx, eb, e.clients["us-east-1"], Image{Name: name, Version: version, Manifest: m, ManifestHash: sha256.Sum256([]byte("mh-" + version)),
		Blob: bytes.NewReader(img), BootMode: BootUEFI}, PublishOptions{Region: "us-east-1"})
	if err != nil {
		t.Fatalf("publish %s@%s: %v", name, version, err)
	}
	amis := map[string]string{}
	for _, r := range regions {
		if r == "us-east-1" {
			amis[r] = pub.AMI
			continue
		}
		out, err := e.clients[r].CopyImage(ctx, &ec2.CopyImageInput{Name: aws.String(name + "-" + version), SourceImageId: aws.String(pub.AMI),
			SourceRegion: aws.String("us-east-1"), CopyImageTags: aws.Bool(true)})
		if err != nil {
			t.Fatalf("copy %s@%s to %s: %v", name, version, r, err)
		}
		amis[r] = aws.ToString(out.ImageId)
	}
	e.clock.Advance(time.Hour)
	return m.Digest, amis
}

// raw returns the published bytes, or nil.
func (e *channelEnv) raw() []byte {
	o, ok := e.fake.Object(e.c.Bucket, e.c.Key)
	if !ok {
		return nil
	}
	return o.Data
}

func (e *channelEnv) doc(t *testing.T) *AMIs {
	t.Helper()
	doc, _, err := e.c.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

var t0 = time.Date(2026, 11, 5, 9, 0, 0, 0, time.UTC)

// Promote publishes what it found in every region, in the documented format; the entry it
// replaces becomes history; promoting it again writes nothing.
func TestPromote(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	d1, a1 := e.publish(t, "labos", "1.0", testRegions...)
	d2, a2 := e.publish(t, "labos", "1.1", testRegions...)

	got, err := Promote(ctx, e.c, e.ec2s, "labos", "1.0", d1, "stable", t0)
	want1 := ChannelEntry{Version: "1.0", Digest: d1, Date: t0, AMIs: a1}
	if err != nil || !cmp.Equal(got, want1) {
		t.Fatalf("promote 1.0: %v\n%s", err, cmp.Diff(want1, got))
	}
	t1 := t0.Add(36 * time.Hour)
	if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1.1", d2, "stable", t1.Add(123*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	o, _ := e.fake.Object(e.c.Bucket, e.c.Key)
	if o.ContentType != "application/json" {
		t.Errorf("Content-Type %q", o.ContentType)
	}
	// The contract workers read: field names, nesting, RFC 3339 dates, indentation, final newline.
	want := fmt.Sprintf(`{
  "schema": 1,
  "updated": "2026-11-06T21:00:00Z",
  "images": {
    "labos": {
      "channels": {
        "stable": {
          "version": "1.1",
          "digest": "%s",
          "date": "2026-11-06T21:00:00Z",
          "amis": {
            "ap-southeast-2": "%s",
            "eu-west-1": "%s",
            "us-east-1": "%s"
          }
        }
      },
      "history": {
        "stable": [
          {
            "version": "1.0",
            "digest": "%s",
            "date": "2026-11-05T09:00:00Z",
            "amis": {
              "ap-southeast-2": "%s",
              "eu-west-1": "%s",
              "us-east-1": "%s"
            }
          }
        ]
      }
    }
  }
}
`, d2, a2["ap-southeast-2"], a2["eu-west-1"], a2["us-east-1"], d1, a1["ap-southeast-2"], a1["eu-west-1"], a1["us-east-1"])
	if diff := cmp.Diff(want, string(o.Data)); diff != "" {
		t.Errorf("amis.json (-want +got):\n%s", diff)
	}

	puts := e.fake.RequestCount("PutObject")
	again, err := Promote(ctx, e.c, e.ec2s, "labos", "1.1", d2, "stable", t1.Add(time.Hour))
	if err != nil || !again.Date.Equal(t1) || e.fake.RequestCount("PutObject") != puts {
		t.Errorf("promoting the current version again: %+v, %v; %d writes", again, err, e.fake.RequestCount("PutObject")-puts)
	}

	for _, ch := range []string{"", "Stable", "-beta", "beta/2", strings.Repeat("b", 64)} {
		if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1.0", d1, ch, t1); err == nil {
			t.Errorf("channel %q accepted", ch)
		}
	}
	if e.fake.RequestCount("PutObject") != puts {
		t.Error("a refused promote wrote")
	}
}

// An image missing in one region is not promoted anywhere, and the error says where and what to
// run.
func TestPromoteMissingRegion(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	d1, _ := e.publish(t, "labos", "1.0", testRegions...)
	d2, _ := e.publish(t, "labos", "1.1", "us-east-1", "eu-west-1")

	_, err := Promote(ctx, e.c, e.ec2s, "labos", "1.1", d2, "stable", t0)
	if err == nil || !strings.Contains(err.Error(), "in ap-southeast-2;") || !strings.Contains(err.Error(), "imaged ami push -copy-to ap-southeast-2 labos@1.1") {
		t.Errorf("promote to an empty contract: %v", err)
	}
	if e.raw() != nil {
		t.Errorf("a failed promote created %s", e.c)
	}
	if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1.0", d1, "stable", t0); err != nil {
		t.Fatal(err)
	}
	before := e.raw()
	if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1.1", d2, "stable", t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "ap-southeast-2") {
		t.Errorf("promote over 1.0: %v", err)
	}
	// Given fewer regions, a promote would leave the channel's workers in the others without an
	// entry: refused.
	two := map[string]ImagesEC2{"us-east-1": e.ec2s["us-east-1"], "eu-west-1": e.ec2s["eu-west-1"]}
	if _, err := Promote(ctx, e.c, two, "labos", "1.1", d2, "stable", t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "serves ap-southeast-2") {
		t.Errorf("promote dropping a region: %v", err)
	}
	if !bytes.Equal(e.raw(), before) {
		t.Errorf("a failed promote changed %s", e.c)
	}
}

// A channel remembers the last HistoryLen entries, newest first.
func TestPromoteHistoryCap(t *testing.T) {
	e := newChannelEnv(t)
	one := map[string]ImagesEC2{"us-east-1": e.ec2s["us-east-1"]}
	var versions []string
	for i := 1; i <= HistoryLen+2; i++ {
		v := fmt.Sprint(i)
		d, _ := e.publish(t, "labos", v, "us-east-1")
		if _, err := Promote(t.Context(), e.c, one, "labos", v, d, "edge", t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	var got []string
	for _, h := range e.doc(t).Images["labos"].History["edge"] {
		got = append(got, h.Version)
	}
	want := slices.Clone(versions[1 : len(versions)-1])
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("history %q, want %q", got, want)
	}
}

// raceS3 holds the first read until a second one has happened, so two updates read the same
// document and then both write.
type raceS3 struct {
	S3
	reads   atomic.Int32
	both    chan struct{}
	mu      sync.Mutex
	refused []string // error codes of refused writes
}

func (r *raceS3) GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := r.S3.GetObject(ctx, in, opts...)
	switch r.reads.Add(1) {
	case 1:
		select {
		case <-r.both:
		case <-ctx.Done():
		}
	case 2:
		close(r.both)
	}
	return out, err
}

func (r *raceS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	out, err := r.S3.PutObject(ctx, in, opts...)
	if ae := smithy.APIError(nil); errors.As(err, &ae) {
		r.mu.Lock()
		r.refused = append(r.refused, ae.ErrorCode())
		r.mu.Unlock()
	}
	return out, err
}

// Two promotes that read the same document both survive: the second write is refused (If-Match,
// or If-None-Match when there was no document yet), and it reads again and reapplies.
func TestPromoteConcurrent(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%v", existing), func(t *testing.T) {
			e := newChannelEnv(t)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			d1, a1 := e.publish(t, "labos", "1.0", testRegions...)
			d2, a2 := e.publish(t, "labos", "1.1", testRegions...)
			want := map[string]ChannelEntry{
				"stable": {Version: "1.0", Digest: d1, Date: t0, AMIs: a1},
				"beta":   {Version: "1.1", Digest: d2, Date: t0, AMIs: a2},
			}
			if existing {
				if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1.1", d2, "edge", t0); err != nil {
					t.Fatal(err)
				}
				want["edge"] = want["beta"]
			}
			puts := e.fake.RequestCount("PutObject")
			r := &raceS3{S3: e.s3, both: make(chan struct{})}
			c := e.c
			c.S3 = r
			var wg sync.WaitGroup
			errs := make([]error, 2)
			wg.Go(func() { _, errs[0] = Promote(ctx, c, e.ec2s, "labos", "1.0", d1, "stable", t0) })
			wg.Go(func() { _, errs[1] = Promote(ctx, c, e.ec2s, "labos", "1.1", d2, "beta", t0) })
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, e.doc(t).Images["labos"].Channels); diff != "" {
				t.Errorf("channels (-want +got):\n%s", diff)
			}
			if !slices.Equal(r.refused, []string{"PreconditionFailed"}) || e.fake.RequestCount("PutObject")-puts != 3 {
				t.Errorf("refused writes %q, %d writes; want one refused of three", r.refused, e.fake.RequestCount("PutObject")-puts)
			}
		})
	}
}

// Rollback walks back through the history, and refuses when there is none left.
func TestRollback(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	var entries []ChannelEntry
	for i, v := range []string{"1", "2", "3"} {
		d, amis := e.publish(t, "labos", v, testRegions...)
		at := t0.Add(time.Duration(i) * 24 * time.Hour)
		if _, err := Promote(ctx, e.c, e.ec2s, "labos", v, d, "stable", at); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, ChannelEntry{Version: v, Digest: d, Date: at, AMIs: amis})
	}
	now, cur := t0.Add(10*24*time.Hour), entries[2]
	for _, step := range []struct {
		to      int
		history []ChannelEntry
	}{
		{1, entries[:1]},
		{0, nil},
	} {
		from, to, err := Rollback(ctx, e.c, e.ec2s, "labos", "stable", now)
		wantTo := entries[step.to]
		wantTo.Date = now // when it became current again
		if err != nil || !cmp.Equal(from, cur) || !cmp.Equal(to, wantTo) {
			t.Fatalf("rollback to %d: %v\nfrom %s\nto %s", step.to+1, err, cmp.Diff(cur, from), cmp.Diff(wantTo, to))
		}
		cur = wantTo
		doc := e.doc(t)
		if cur, _ := doc.Current("labos", "stable"); !cmp.Equal(cur, wantTo) || !cmp.Equal(doc.Images["labos"].History["stable"], step.history) {
			t.Errorf("after rollback to %d: current %+v, history %+v", step.to+1, cur, doc.Images["labos"].History["stable"])
		}
		now = now.Add(time.Hour)
	}
	before := e.raw()
	if _, _, err := Rollback(ctx, e.c, e.ec2s, "labos", "stable", now); err == nil || !strings.Contains(err.Error(), "no earlier version") {
		t.Errorf("rollback without history: %v", err)
	}
	if _, _, err := Rollback(ctx, e.c, e.ec2s, "labos", "beta", now); err == nil || !strings.Contains(err.Error(), "no channel beta") {
		t.Errorf("rollback of a missing channel: %v", err)
	}
	if !bytes.Equal(e.raw(), before) {
		t.Error("a refused rollback wrote")
	}
}

// Rollback refuses to point a channel at an AMI that is gone.
func TestRollbackRefusesDeregistered(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	d1, a1 := e.publish(t, "labos", "1", testRegions...)
	d2, _ := e.publish(t, "labos", "2", testRegions...)
	for _, p := range []struct {
		v string
		d images.Digest
	}{{"1", d1}, {"2", d2}} {
		if _, err := Promote(ctx, e.c, e.ec2s, "labos", p.v, p.d, "stable", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.clients["eu-west-1"].DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(a1["eu-west-1"])}); err != nil {
		t.Fatal(err)
	}
	before := e.raw()
	_, _, err := Rollback(ctx, e.c, e.ec2s, "labos", "stable", t0)
	if err == nil || !strings.Contains(err.Error(), a1["eu-west-1"]+" of 1 in eu-west-1 is no longer available") {
		t.Errorf("rollback to a deregistered AMI: %v", err)
	}
	if !bytes.Equal(e.raw(), before) {
		t.Error("a refused rollback wrote")
	}
}

// Prune with keep 2 among six versions, stable pointing at the oldest and its history at the
// second: in every region, exactly versions 3 and 4 and their snapshots go; another image's AMIs
// are not touched; a dry run changes nothing.
func TestPrune(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	_, other := e.publish(t, "other", "1", testRegions...) // the oldest AMIs of all
	digests := map[string]images.Digest{}
	amis := map[string]map[string]string{} // version → region → AMI
	for _, v := range []string{"1", "2", "3", "4", "5", "6"} {
		digests[v], amis[v] = e.publish(t, "labos", v, testRegions...)
	}
	for _, v := range []string{"2", "1"} {
		if _, err := Promote(ctx, e.c, e.ec2s, "labos", v, digests[v], "stable", t0); err != nil {
			t.Fatal(err)
		}
	}
	snaps := func(ami string) []string {
		im, ok := e.fake.Image(ami)
		if !ok {
			t.Fatalf("AMI %s is gone", ami)
		}
		var out []string
		for _, m := range im.BlockDeviceMappings {
			out = append(out, m.SnapshotID)
		}
		return out
	}
	var want PruneResult
	for _, r := range testRegions {
		kept := func(v string, why ...string) KeptAMI {
			im, _ := e.fake.Image(amis[v][r])
			return KeptAMI{ID: amis[v][r], Version: v, Created: im.CreationDate, Why: why}
		}
		removed := func(v string) RemovedAMI {
			im, _ := e.fake.Image(amis[v][r])
			return RemovedAMI{ID: amis[v][r], Version: v, Created: im.CreationDate, Snapshots: snaps(amis[v][r])}
		}
		want.Regions = append(want.Regions, RegionPrune{Region: r,
			Kept:    []KeptAMI{kept("6", "newest 2"), kept("5", "newest 2"), kept("2", "history of stable"), kept("1", "channel stable")},
			Removed: []RemovedAMI{removed("3"), removed("4")},
		})
	}
	gone := map[string]bool{}
	for _, r := range testRegions {
		for _, v := range []string{"3", "4"} {
			gone[amis[v][r]] = true
			for _, s := range snaps(amis[v][r]) {
				gone[s] = true
			}
		}
	}
	nImages, nSnaps := 0, 0
	for _, r := range testRegions {
		nImages += len(e.fake.Images(r))
		nSnaps += len(e.fake.Snapshots(r))
	}

	dry, err := Prune(ctx, e.c, e.ec2s, "labos", 2, true)
	want.DryRun = true
	if diff := cmp.Diff(want, dry); err != nil || diff != "" {
		t.Fatalf("dry run: %v\n%s", err, diff)
	}
	if e.fake.RequestCount("DeregisterImage")+e.fake.RequestCount("DeleteSnapshot") != 0 {
		t.Fatal("the dry run changed something")
	}

	res, err := Prune(ctx, e.c, e.ec2s, "labos", 2, false)
	want.DryRun = false
	if diff := cmp.Diff(want, res); err != nil || diff != "" {
		t.Fatalf("prune: %v\n%s", err, diff)
	}
	left, leftSnaps := 0, 0
	for _, r := range testRegions {
		for _, im := range e.fake.Images(r) {
			left++
			if gone[im.ID] {
				t.Errorf("%s: AMI %s (%s) is still registered", r, im.ID, im.Tags[TagVersion])
			}
		}
		for _, s := range e.fake.Snapshots(r) {
			leftSnaps++
			if gone[s.ID] {
				t.Errorf("%s: snapshot %s is left", r, s.ID)
			}
		}
		if _, ok := e.fake.Image(other[r]); !ok {
			t.Errorf("%s: another image's AMI was removed", r)
		}
	}
	if left != nImages-6 || leftSnaps != nSnaps-6 {
		t.Errorf("%d of %d AMIs and %d of %d snapshots left; want 6 fewer each", left, nImages, leftSnaps, nSnaps)
	}

	again, err := Prune(ctx, e.c, e.ec2s, "labos", 2, false)
	if err != nil || len(again.Regions) != 3 || len(again.Regions[0].Removed)+len(again.Regions[1].Removed)+len(again.Regions[2].Removed) != 0 {
		t.Errorf("second prune: %+v, %v", again, err)
	}
}

// failingEC2 fails the n-th DeregisterImage.
type failingEC2 struct {
	ImagesEC2
	n, calls int
}

func (f *failingEC2) DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, opts ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	if f.calls++; f.calls == f.n {
		return nil, errors.New("injected failure")
	}
	return f.ImagesEC2.DeregisterImage(ctx, in, opts...)
}

// Prune refuses what it cannot do safely, and a failure reports what was already removed.
func TestPruneRefusesAndReports(t *testing.T) {
	e := newChannelEnv(t)
	ctx := t.Context()
	amis := map[string]map[string]string{}
	var d1 images.Digest
	for _, v := range []string{"1", "2", "3", "4"} {
		var d images.Digest
		d, amis[v] = e.publish(t, "labos", v, testRegions...)
		if v == "1" {
			d1 = d
		}
	}
	if _, err := Prune(ctx, e.c, e.ec2s, "labos", 1, false); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("prune without a contract: %v", err)
	}
	if _, err := Promote(ctx, e.c, e.ec2s, "labos", "1", d1, "stable", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := Prune(ctx, e.c, e.ec2s, "labos", 0, false); err == nil {
		t.Error("keep 0 accepted")
	}
	if e.fake.RequestCount("DeregisterImage") != 0 {
		t.Fatal("a refused prune deregistered")
	}

	ec2s := map[string]ImagesEC2{}
	for r, c := range e.ec2s {
		ec2s[r] = c
	}
	ec2s["eu-west-1"] = &failingEC2{ImagesEC2: e.ec2s["eu-west-1"], n: 2}
	res, err := Prune(ctx, e.c, ec2s, "labos", 1, false)
	if err == nil || !strings.Contains(err.Error(), "deregister "+amis["3"]["eu-west-1"]+" (labos@3) in eu-west-1") {
		t.Errorf("err %v", err)
	}
	var removed []string
	for _, rp := range res.Regions {
		for _, r := range rp.Removed {
			removed = append(removed, rp.Region+" "+r.Version)
		}
	}
	if want := []string{"ap-southeast-2 2", "ap-southeast-2 3", "eu-west-1 2"}; !slices.Equal(removed, want) {
		t.Errorf("reported removed %q, want %q", removed, want)
	}
	if _, ok := e.fake.Image(amis["2"]["us-east-1"]); !ok {
		t.Error("prune went on after the failure")
	}
}

// A document of an unknown schema is refused, and not overwritten.
func TestContractSchema(t *testing.T) {
	e := newChannelEnv(t)
	if _, err := e.s3.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(e.c.Bucket), Key: aws.String(e.c.Key),
		Body: strings.NewReader(`{"schema": 2, "images": {}}`)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.c.Load(t.Context()); err == nil || !strings.Contains(err.Error(), "schema 2") {
		t.Errorf("Load: %v", err)
	}
	_, err := e.c.Update(t.Context(), func(a *AMIs) error { a.Updated = t0; return nil })
	if err == nil || e.fake.RequestCount("PutObject") != 1 {
		t.Errorf("Update: %v", err)
	}
}

// An entry is complete and its digest is one: a document that another tool (or a hand) wrote
// with a malformed digest is refused, naming it, rather than published again.
func TestParseAMIsEntries(t *testing.T) {
	doc := func(digest string) []byte {
		return []byte(`{"schema":1,"images":{"labos":{"channels":{"stable":{"version":"1",` + digest +
			`"date":"2026-11-05T09:00:00Z","amis":{"us-east-1":"ami-1"}}}}}}`)
	}
	good := "sha256:" + strings.Repeat("ab", 32)
	if a, err := ParseAMIs(doc(`"digest":"` + good + `",`)); err != nil || a.Images["labos"].Channels["stable"].Digest.String() != good {
		t.Fatalf("a good document: %v", err)
	}
	for _, c := range []struct{ digest, want string }{
		{``, "lacks its version, digest or AMIs"},
		{`"digest":"",`, "lacks its version, digest or AMIs"},
		{`"digest":"sha256:ab",`, `"sha256:ab" is not a SHA-256 digest`},
		{`"digest":"sha256:` + strings.Repeat("0", 64) + `",`, "names no image"},
	} {
		if _, err := ParseAMIs(doc(c.digest)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.digest, err, c.want)
		}
	}
}

func FuzzParseAMIs(f *testing.F) {
	f.Add([]byte(`{"schema":1,"updated":"2026-11-05T09:00:00Z","images":{"labos":{"channels":{"stable":{"version":"1","digest":"sha256:` + strings.Repeat("0", 63) + `1",` +
		`"date":"2026-11-05T09:00:00Z","amis":{"us-east-1":"ami-1"}}},"history":{"stable":[{"version":"0","digest":"` + strings.Repeat("2", 64) + `","date":"2026-11-04T09:00:00Z","amis":{"us-east-1":"ami-0"}}]}}}}`))
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`{"schema":2}`))
	f.Add([]byte(`{"schema":1,"images":{"x":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := ParseAMIs(b)
		if err != nil {
			return
		}
		// What parses re-encodes, and that encoding is stable.
		out, err := doc.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		doc2, err := ParseAMIs(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		out2, err := doc2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("not stable: %v\n%s\n%s", err, out, out2)
		}
	})
}
