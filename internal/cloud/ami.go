package cloud

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/images"
)

// EC2 is the part of the EC2 client publishing uses (*ec2.Client).
type EC2 interface {
	ec2.DescribeSnapshotsAPIClient
	ec2.DescribeImagesAPIClient
	RegisterImage(ctx context.Context, in *ec2.RegisterImageInput, opts ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error)
	CopyImage(ctx context.Context, in *ec2.CopyImageInput, opts ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
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
	ManifestHash  images.Hash
	Blob          io.ReaderAt
	BootMode      string // legacy-bios, uefi or uefi-preferred; default: DetectBootMode
}

// Published is an AMI in one region.
type Published struct {
	Region     string
	AMI        string
	SnapshotID string
	Existing   bool // found by its digest tag: nothing was pushed (or copied)
	Push       PushResult
	Copies     []Published // in the other regions (CopyTo), in their order
}

// PublishOptions tune PublishAMI.
type PublishOptions struct {
	Region string
	Push   PushOptions
	Wait   time.Duration // for the snapshot to complete and each AMI to be available (30 min)
	// CopyTo holds a client per region the AMI is copied into: CopyImage is called in the
	// destination region, as EC2 requires.
	CopyTo []RegionClient
	// JournalDir keeps push journals (PushOptions.Journal), one per region and image, so an
	// interrupted push resumes. "" keeps none.
	JournalDir string
}

// RegionClient is an EC2 client for one region.
type RegionClient struct {
	Region string
	EC2    EC2
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
		mode, err := DetectBootMode(img.Blob, img.Manifest.Size)
		if err != nil {
			return Published{Region: opt.Region}, fmt.Errorf("%w (imaged ami push -boot-mode)", err)
		}
		img.BootMode = mode
	}
	digest := img.Manifest.Digest.String()
	pub := Published{Region: opt.Region}
	found, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagDigest), Values: []string{digest}}}})
	if err != nil {
		return pub, fmt.Errorf("cloud: look for %s in %s: %w", digest, opt.Region, err)
	}
	tags := map[string]string{TagName: img.Name, TagVersion: img.Version, TagDigest: digest, TagManifest: img.ManifestHash.String()}
	name := fmt.Sprintf("%s-%s-%s", img.Name, img.Version, img.Manifest.Digest.Hex()[:12])
	if ami := usable(found.Images); ami != "" {
		pub.AMI, pub.Existing = ami, true
		if err := waitImage(ctx, c, pub.AMI, opt.Wait); err != nil {
			return pub, err
		}
		return copyTo(ctx, pub, name, digest, tags, opt)
	}
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
	if push.Journal == "" && opt.JournalDir != "" {
		push.Journal = filepath.Join(opt.JournalDir, fmt.Sprintf("%s-%s.journal", opt.Region, img.Manifest.Digest.Hex()))
	}
	// A snapshot of this image completed by an earlier run that stopped before registering it.
	snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + TagDigest), Values: []string{digest}}, {Name: aws.String("status"), Values: []string{"completed"}}}})
	if err != nil {
		return pub, fmt.Errorf("cloud: look for snapshots of %s in %s: %w", digest, opt.Region, err)
	}
	if len(snaps.Snapshots) > 0 {
		pub.SnapshotID = aws.ToString(snaps.Snapshots[0].SnapshotId)
	} else {
		pub.Push, err = PushSnapshot(ctx, e, img.Blob, img.Manifest, push)
		if err != nil {
			return pub, err
		}
		pub.SnapshotID = pub.Push.SnapshotID
	}
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
		Name:               aws.String(name),
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
	if err := waitImage(ctx, c, pub.AMI, opt.Wait); err != nil {
		return pub, err
	}
	return copyTo(ctx, pub, name, digest, tags, opt)
}

// usable returns the id of an available or pending image among found, or "".
func usable(found []ec2types.Image) string {
	for _, im := range found {
		if im.State == ec2types.ImageStateAvailable || im.State == ec2types.ImageStatePending {
			return aws.ToString(im.ImageId)
		}
	}
	return ""
}

// copyTo copies the available AMI pub into every CopyTo region at once (each region's own
// CopyImage, with the same name and tags, idempotent by client token), unless a copy tagged with
// the digest is there already, and waits until every copy is available.
func copyTo(ctx context.Context, pub Published, name, digest string, tags map[string]string, opt PublishOptions) (Published, error) {
	pub.Copies = make([]Published, len(opt.CopyTo))
	var tagList []ec2types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		tagList = append(tagList, ec2types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, dst := range opt.CopyTo {
		g.Go(func() error {
			cp := &pub.Copies[i]
			cp.Region = dst.Region
			found, err := dst.EC2.DescribeImages(gctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
				Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagDigest), Values: []string{digest}}}})
			if err != nil {
				return fmt.Errorf("cloud: look for %s in %s: %w", digest, dst.Region, err)
			}
			if cp.AMI = usable(found.Images); cp.AMI != "" {
				cp.Existing = true
			} else {
				out, err := dst.EC2.CopyImage(gctx, &ec2.CopyImageInput{
					Name: aws.String(name), SourceImageId: aws.String(pub.AMI), SourceRegion: aws.String(pub.Region),
					Description:       aws.String(fmt.Sprintf("imaged %s@%s %s (copied from %s %s)", tags[TagName], tags[TagVersion], digest, pub.Region, pub.AMI)),
					ClientToken:       aws.String(fmt.Sprintf("imaged-copy-%s-%s", dst.Region, pub.AMI)),
					TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tagList}},
				})
				if err != nil {
					return fmt.Errorf("cloud: copy %s from %s into %s: %w", pub.AMI, pub.Region, dst.Region, err)
				}
				cp.AMI = aws.ToString(out.ImageId)
			}
			return waitImage(gctx, dst.EC2, cp.AMI, opt.Wait)
		})
	}
	return pub, g.Wait()
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
