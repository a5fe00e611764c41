package cloud

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

func ec2Client(url string) *ec2.Client {
	return ec2.New(ec2.Options{BaseEndpoint: aws.String(url), Region: "us-east-1", Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
}

// PublishAMI registers what AWS would otherwise default (the fake, like AWS, makes an image
// i386/paravirtual unless told), tags the AMI with the digest, and a second publish of the same
// image finds it by that tag and pushes nothing.
func TestPublishAMI(t *testing.T) {
	img, m := halfZero(t, 32)
	f := awsfake.New(awsfake.Options{SnapshotCompletionDelay: 10 * time.Millisecond, ImageAvailableDelay: 10 * time.Millisecond})
	srv := f.Start(t)
	e, c := ebsClient(srv.URL), ec2Client(srv.URL)
	im := Image{Name: "labos", Version: "1", Manifest: m, ManifestHash: "mh", Blob: bytes.NewReader(img)}
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
