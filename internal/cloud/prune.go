package cloud

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// PruneResult is what Prune kept and removed.
type PruneResult struct {
	DryRun  bool          // nothing was changed: Removed is what would have been
	Regions []RegionPrune // by region name
}

// RegionPrune is what Prune kept and removed in one region.
type RegionPrune struct {
	Region  string
	Kept    []KeptAMI    // newest first
	Removed []RemovedAMI // oldest first, in the order removed
}

// KeptAMI is an AMI Prune kept, and why: "newest 10", "channel stable", "history of stable",
// "channel beta of other" (another image's channel points at the same AMI).
type KeptAMI struct {
	ID, Version string
	Created     time.Time
	Why         []string
}

// RemovedAMI is an AMI Prune deregistered, and the snapshots it deleted.
type RemovedAMI struct {
	ID, Version string
	Created     time.Time
	Snapshots   []string
	Shared      []string // its snapshots that a kept AMI uses too: not deleted
}

// Prune removes old AMIs of image name: in each region of ec2s, of this account's AMIs tagged
// imaged:name=name it keeps the newest keep (by creation date) and every AMI a channel of any
// image in the published contract points at, now or in its history (so rollback keeps working);
// it deregisters the others, then deletes their EBS snapshots. With dryRun it changes nothing and
// reports what it would remove. It refuses when the contract does not exist, since it could not
// tell what the channels point at. On failure the result holds what was already removed.
//
// A promote racing with Prune can point a channel at an AMI Prune is removing: promote versions
// newer than the newest keep, or do not prune while promoting.
func Prune(ctx context.Context, c Contract, ec2s map[string]ImagesEC2, name string, keep int, dryRun bool) (PruneResult, error) {
	res := PruneResult{DryRun: dryRun}
	switch {
	case name == "":
		return res, errors.New("cloud: prune: no image name")
	case keep < 1:
		return res, fmt.Errorf("cloud: prune %s: keep %d: keep at least the newest AMI", name, keep)
	case len(ec2s) == 0:
		return res, fmt.Errorf("cloud: prune %s: no regions given", name)
	}
	doc, etag, err := c.Load(ctx)
	if err != nil {
		return res, fmt.Errorf("%w; pruned nothing", err)
	}
	if etag == "" {
		return res, fmt.Errorf("cloud: prune %s: %s does not exist, so what the channels point at is unknown; pruned nothing (check the bucket and key)", name, c)
	}
	protect := protected(doc, name)
	for _, region := range slices.Sorted(maps.Keys(ec2s)) {
		rp, err := pruneRegion(ctx, ec2s[region], region, name, keep, protect[region], dryRun)
		res.Regions = append(res.Regions, rp)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// protected returns, per region, the AMIs the document points at and why.
func protected(doc *AMIs, name string) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	add := func(e ChannelEntry, why string) {
		for region, ami := range e.AMIs {
			if out[region] == nil {
				out[region] = map[string][]string{}
			}
			if !slices.Contains(out[region][ami], why) {
				out[region][ami] = append(out[region][ami], why)
			}
		}
	}
	for _, img := range slices.Sorted(maps.Keys(doc.Images)) {
		ic, of := doc.Images[img], ""
		if img != name {
			of = " of " + img
		}
		for _, ch := range slices.Sorted(maps.Keys(ic.Channels)) {
			add(ic.Channels[ch], "channel "+ch+of)
		}
		for _, ch := range slices.Sorted(maps.Keys(ic.History)) {
			for _, e := range ic.History[ch] {
				add(e, "history of "+ch+of)
			}
		}
	}
	return out
}

func pruneRegion(ctx context.Context, e ImagesEC2, region, name string, keep int, protect map[string][]string, dryRun bool) (RegionPrune, error) {
	rp := RegionPrune{Region: region}
	all, err := listImages(ctx, e, filter("tag:"+TagName, name))
	if err != nil {
		return rp, fmt.Errorf("cloud: prune %s: list AMIs in %s: %w", name, region, err)
	}
	var drop []ec2types.Image
	used := map[string]bool{} // snapshots of kept AMIs
	n := 0
	for _, im := range all {
		if im.State == ec2types.ImageStateDeregistered {
			continue
		}
		n++
		why := slices.Clone(protect[aws.ToString(im.ImageId)])
		if n <= keep {
			why = slices.Insert(why, 0, fmt.Sprintf("newest %d", keep))
		}
		if len(why) == 0 {
			drop = append(drop, im)
			continue
		}
		id, version, created := describe(im)
		rp.Kept = append(rp.Kept, KeptAMI{ID: id, Version: version, Created: created, Why: why})
		for _, s := range snapshots(im) {
			used[s] = true
		}
	}
	slices.Reverse(drop)
	for _, im := range drop {
		var r RemovedAMI
		r.ID, r.Version, r.Created = describe(im)
		var del []string
		for _, s := range snapshots(im) {
			if used[s] {
				r.Shared = append(r.Shared, s)
			} else {
				del = append(del, s)
			}
		}
		if dryRun {
			r.Snapshots = del
			rp.Removed = append(rp.Removed, r)
			continue
		}
		if _, err := e.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: im.ImageId}); err != nil {
			return rp, fmt.Errorf("cloud: prune %s: deregister %s (%s@%s) in %s: %w", name, r.ID, name, r.Version, region, err)
		}
		rp.Removed = append(rp.Removed, r)
		for _, s := range del {
			if _, err := e.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s)}); err != nil {
				// The AMI is gone, so a second prune would not find this snapshot again.
				return rp, fmt.Errorf("cloud: prune %s: %s is deregistered but its snapshot %s in %s is left (aws ec2 delete-snapshot --region %s --snapshot-id %s): %w",
					name, r.ID, s, region, region, s, err)
			}
			rp.Removed[len(rp.Removed)-1].Snapshots = append(rp.Removed[len(rp.Removed)-1].Snapshots, s)
		}
	}
	return rp, nil
}

func describe(im ec2types.Image) (id, version string, created time.Time) {
	for _, t := range im.Tags {
		if aws.ToString(t.Key) == TagVersion {
			version = aws.ToString(t.Value)
		}
	}
	created, _ = time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
	return aws.ToString(im.ImageId), version, created
}

// snapshots are the EBS snapshots of an AMI's block device mappings.
func snapshots(im ec2types.Image) []string {
	var out []string
	for _, m := range im.BlockDeviceMappings {
		if m.Ebs != nil && aws.ToString(m.Ebs.SnapshotId) != "" {
			out = append(out, aws.ToString(m.Ebs.SnapshotId))
		}
	}
	return out
}

// Listed is one of imaged's AMIs in one region.
type Listed struct {
	Region, ID, Name, Version, Digest, State string
	Created                                  time.Time
}

// List returns this account's AMIs that imaged published (tagged with a digest), of image name
// or of every image when name is "", in each region of ec2s: by region, newest first.
func List(ctx context.Context, ec2s map[string]ImagesEC2, name string) ([]Listed, error) {
	f := ec2types.Filter{Name: aws.String("tag-key"), Values: []string{TagDigest}}
	if name != "" {
		f = filter("tag:"+TagName, name)
	}
	var out []Listed
	for _, region := range slices.Sorted(maps.Keys(ec2s)) {
		ims, err := listImages(ctx, ec2s[region], f)
		if err != nil {
			return out, fmt.Errorf("cloud: list AMIs in %s: %w", region, err)
		}
		for _, im := range ims {
			l := Listed{Region: region, State: string(im.State)}
			l.ID, l.Version, l.Created = describe(im)
			for _, t := range im.Tags {
				switch aws.ToString(t.Key) {
				case TagName:
					l.Name = aws.ToString(t.Value)
				case TagDigest:
					l.Digest = aws.ToString(t.Value)
				}
			}
			out = append(out, l)
		}
	}
	return out, nil
}
