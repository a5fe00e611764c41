package cloud

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/cloud/awsfake"
)

func ec2Client(url string) *ec2.Client { return ec2In(url, "us-east-1") }

// ec2In is a client for one region: the fake routes requests by their signing region.
func ec2In(url, region string) *ec2.Client {
	return ec2.New(ec2.Options{BaseEndpoint: aws.String(url), Region: region, Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
}

// PublishAMI registers what AWS would otherwise default (the fake, like AWS, makes an image
// i386/paravirtual unless told), tags the AMI with the digest, and a second publish of the same
// image finds it by that tag and pushes nothing.
// manifestHash is m's manifest hash, as the catalog keeps it.
func manifestHash(t *testing.T, m *images.Manifest) images.Hash {
	t.Helper()
	h, err := m.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPublishAMI(t *testing.T) {
	img, m := halfZero(t, 32)
	f := awsfake.New(awsfake.Options{SnapshotCompletionDelay: 10 * time.Millisecond, ImageAvailableDelay: 10 * time.Millisecond})
	srv := f.Start(t)
	e, c := ebsClient(srv.URL), ec2Client(srv.URL)
	im := Image{Name: "labos", Version: "1", Manifest: m, ManifestHash: manifestHash(t, m), Blob: bytes.NewReader(img), BootMode: BootUEFI}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := PublishAMI(ctx, e, c, im, PublishOptions{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	a, ok := f.Image(pub.AMI)
	if !ok || pub.Existing {
		t.Fatalf("AMI %s: %v, existing %v", pub.AMI, ok, pub.Existing)
	}
	if a.Architecture != "x86_64" || a.VirtualizationType != "hvm" || !a.EnaSupport || a.ImdsSupport != "v2.0" || a.BootMode != "uefi" ||
		a.State != "available" || a.Tags[TagDigest] != m.Digest.String() || a.Tags[TagName] != "labos" {
		t.Errorf("AMI %+v", a)
	}
	if len(a.BlockDeviceMappings) != 1 || a.BlockDeviceMappings[0].SnapshotID != pub.SnapshotID || !a.BlockDeviceMappings[0].DeleteOnTermination ||
		a.BlockDeviceMappings[0].VolumeType != "gp3" {
		t.Errorf("root mapping %+v", a.BlockDeviceMappings)
	}
	puts := f.RequestCount("PutSnapshotBlock")
	again, err := PublishAMI(ctx, e, c, im, PublishOptions{Region: "us-east-1"})
	if err != nil || !again.Existing || again.AMI != pub.AMI || f.RequestCount("PutSnapshotBlock") != puts || f.RequestCount("StartSnapshot") != 1 {
		t.Errorf("second publish: %+v %v; puts %d → %d", again, err, puts, f.RequestCount("PutSnapshotBlock"))
	}
}

// With CopyTo, the AMI is copied by each destination region's own CopyImage, tagged like the
// source; a second publish finds every copy by its digest tag and copies nothing again.
func TestPublishAMICopyTo(t *testing.T) {
	img, m := halfZero(t, 16)
	f := awsfake.New(awsfake.Options{ImageAvailableDelay: 20 * time.Millisecond})
	srv := f.Start(t)
	im := Image{Name: "labos", Version: "2", Manifest: m, ManifestHash: manifestHash(t, m), Blob: bytes.NewReader(img), BootMode: BootUEFIPreferred}
	opt := PublishOptions{Region: "us-east-1", CopyTo: []RegionClient{{"eu-west-1", ec2In(srv.URL, "eu-west-1")}, {"ap-south-1", ec2In(srv.URL, "ap-south-1")}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := PublishAMI(ctx, ebsClient(srv.URL), ec2Client(srv.URL), im, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(pub.Copies) != 2 {
		t.Fatalf("copies %+v", pub.Copies)
	}
	for i, region := range []string{"eu-west-1", "ap-south-1"} {
		cp := pub.Copies[i]
		a, ok := f.Image(cp.AMI)
		if !ok || cp.Region != region || a.Region != region || a.State != "available" || a.SourceImageID != pub.AMI ||
			a.Tags[TagDigest] != m.Digest.String() || a.Tags[TagVersion] != "2" || a.Architecture != "x86_64" {
			t.Errorf("copy into %s: %+v (%+v)", region, cp, a)
		}
	}
	again, err := PublishAMI(ctx, ebsClient(srv.URL), ec2Client(srv.URL), im, opt)
	if err != nil || !again.Existing || !again.Copies[0].Existing || !again.Copies[1].Existing || again.Copies[1].AMI != pub.Copies[1].AMI ||
		f.RequestCount("CopyImage") != 2 {
		t.Errorf("second publish %+v, %v; %d CopyImage calls", again, err, f.RequestCount("CopyImage"))
	}
}

// A snapshot completed by a run that stopped before RegisterImage is registered, not pushed again.
func TestPublishAMIRegistersCompletedSnapshot(t *testing.T) {
	img, m := halfZero(t, 16)
	f := awsfake.New(awsfake.Options{})
	srv := f.Start(t)
	res, err := PushSnapshot(context.Background(), ebsClient(srv.URL), bytes.NewReader(img), m,
		PushOptions{Tags: map[string]string{TagDigest: m.Digest.String()}})
	if err != nil {
		t.Fatal(err)
	}
	puts := f.RequestCount("PutSnapshotBlock")
	pub, err := PublishAMI(context.Background(), ebsClient(srv.URL), ec2Client(srv.URL),
		Image{Name: "labos", Version: "3", Manifest: m, Blob: bytes.NewReader(img), BootMode: BootLegacyBIOS}, PublishOptions{Region: "us-east-1"})
	if err != nil || pub.SnapshotID != res.SnapshotID || f.RequestCount("PutSnapshotBlock") != puts || f.RequestCount("StartSnapshot") != 1 {
		t.Errorf("publish %+v, %v: snapshot %s, %d → %d puts", pub, err, res.SnapshotID, puts, f.RequestCount("PutSnapshotBlock"))
	}
}

// Without a boot mode, PublishAMI reads it from the image; an image no firmware can boot is
// refused before anything is sent.
func TestPublishAMIDetectsBootMode(t *testing.T) {
	f := awsfake.New(awsfake.Options{})
	srv := f.Start(t)
	img, m := halfZero(t, 8) // its first blocks are zero: no MBR, no GPT
	_, err := PublishAMI(context.Background(), ebsClient(srv.URL), ec2Client(srv.URL),
		Image{Name: "blank", Version: "1", Manifest: m, Blob: bytes.NewReader(img)}, PublishOptions{Region: "us-east-1"})
	if err == nil || f.RequestCount("StartSnapshot") != 0 {
		t.Fatalf("an unbootable image: %v, %d snapshots started", err, f.RequestCount("StartSnapshot"))
	}
	raw := disk(true, nil, 0x83)
	b := images.NewBuilder()
	b.Write(raw)
	m, _ = b.Manifest()
	pub, err := PublishAMI(context.Background(), ebsClient(srv.URL), ec2Client(srv.URL),
		Image{Name: "bios", Version: "1", Manifest: m, Blob: bytes.NewReader(raw)}, PublishOptions{Region: "us-east-1"})
	if a, _ := f.Image(pub.AMI); err != nil || a.BootMode != BootLegacyBIOS {
		t.Errorf("an MBR image: %v, boot mode %q", err, a.BootMode)
	}
}
