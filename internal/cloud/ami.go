package cloud

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imaged/imaged/images"
)

// EC2 is the part of the EC2 client publishing uses (*ec2.Client).
type EC2 interface {
	ec2.DescribeSnapshotsAPIClient
	ec2.DescribeImagesAPIClient
	RegisterImage(ctx context.Context, in *ec2.RegisterImageInput, opts ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error)
}

// Tags imaged puts on its snapshots and AMIs: the digest tag is how a published image is found
// again (a second push is a no-op).
const (
	TagName     = "imaged:name"
	TagVersion  = "imaged:version"
	TagDigest   = "imaged:digest"
	TagManifest = "imaged:manifest-hash"
)

// Image is what PublishAMI publishes: the catalog's record of an image and its bytes.
type Image struct {
	Name, Version string
	Manifest      *images.Manifest
	ManifestHash  string
	Blob          io.ReaderAt
	BootMode      string // uefi (default) or legacy-bios
}

// Published is an AMI in one region.
type Published struct {
	Region     string
	AMI        string
	SnapshotID string
	Existing   bool // found by its digest tag: nothing was pushed
	Push       PushResult
}

// PublishOptions tune PublishAMI.
type PublishOptions struct {
	Region string
	Push   PushOptions
	Wait   time.Duration // for the snapshot to complete and the AMI to be available (30 min)
}

// PublishAMI makes img an AMI in one region: unless an AMI tagged with its digest exists there,
// its blocks become an EBS snapshot (PushSnapshot), which is registered as an x86_64 HVM image
// with ENA, IMDSv2 only, and a gp3 root volume deleted on termination, named name-version and
// tagged with name, version, digest and manifest hash; it returns once the AMI is available.
func PublishAMI(ctx context.Context, e EBS, c EC2, img Image, opt PublishOptions) (Published, error) {
	if opt.Wait <= 0 {
		opt.Wait = 30 * time.Minute
	}
	if img.BootMode == "" {
		img.BootMode = "uefi"
	}
	digest := img.Manifest.Digest.String()
	pub := Published{Region: opt.Region}
	found, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagDigest), Values: []string{digest}}}})
	if err != nil {
		return pub, fmt.Errorf("cloud: look for %s in %s: %w", digest, opt.Region, err)
	}
	for _, im := range found.Images {
		if im.State == ec2types.ImageStateAvailable || im.State == ec2types.ImageStatePending {
			pub.AMI, pub.Existing = aws.ToString(im.ImageId), true
			return pub, waitImage(ctx, c, pub.AMI, opt.Wait)
		}
	}
	tags := map[string]string{TagName: img.Name, TagVersion: img.Version, TagDigest: digest, TagManifest: img.ManifestHash}
	push := opt.Push
	if push.Tags == nil {
		push.Tags = tags
	}
	if push.ClientToken == "" {
		// The same image in the same region is the same snapshot: a retried start resumes it.
		push.ClientToken = fmt.Sprintf("imaged-%s-%s", opt.Region, img.Manifest.Digest.Hex()[:32])
	}
	if push.Description == "" {
		push.Description = fmt.Sprintf("imaged %s@%s %s", img.Name, img.Version, digest)
	}
	pub.Push, err = PushSnapshot(ctx, e, img.Blob, img.Manifest, push)
	if err != nil {
		return pub, err
	}
	pub.SnapshotID = pub.Push.SnapshotID
	if err := ec2.NewSnapshotCompletedWaiter(c, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 15*time.Second
	}).Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{pub.SnapshotID}}, opt.Wait); err != nil {
		return pub, fmt.Errorf("cloud: snapshot %s did not complete: %w", pub.SnapshotID, err)
	}
	gib := int32((img.Manifest.Size + (1 << 30) - 1) >> 30)
	var tagList []ec2types.Tag
	for k, v := range tags {
		tagList = append(tagList, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{
		Name:               aws.String(fmt.Sprintf("%s-%s-%s", img.Name, img.Version, img.Manifest.Digest.Hex()[:12])),
		Description:        aws.String(push.Description),
		Architecture:       ec2types.ArchitectureValuesX8664,
		VirtualizationType: aws.String("hvm"),
		BootMode:           ec2types.BootModeValues(img.BootMode),
		EnaSupport:         aws.Bool(true),
		ImdsSupport:        ec2types.ImdsSupportValuesV20,
		RootDeviceName:     aws.String("/dev/xvda"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &ec2types.EbsBlockDevice{
			SnapshotId: aws.String(pub.SnapshotID), VolumeSize: aws.Int32(gib), VolumeType: ec2types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true)}}},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tagList}},
	})
	if err != nil {
		return pub, fmt.Errorf("cloud: register %s@%s from %s: %w", img.Name, img.Version, pub.SnapshotID, err)
	}
	pub.AMI = aws.ToString(out.ImageId)
	return pub, waitImage(ctx, c, pub.AMI, opt.Wait)
}

func waitImage(ctx context.Context, c EC2, ami string, d time.Duration) error {
	err := ec2.NewImageAvailableWaiter(c, func(o *ec2.ImageAvailableWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 15*time.Second
	}).Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}}, d)
	if err != nil {
		return fmt.Errorf("cloud: AMI %s did not become available: %w", ami, err)
	}
	return nil
}
