package awsfake

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

func (f *Fake) describeSnapshots(q *ec2Req, b *xb) *ec2Error {
	ids := q.list("SnapshotId")
	for _, id := range ids {
		if s, ok := f.snapshots[id]; !ok || s.Region != q.region {
			return ec2Err("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
	}
	values := func(s *snapshot, filter string) []string {
		switch filter {
		case "snapshot-id":
			return []string{s.ID}
		case "status":
			return []string{s.State}
		case "owner-id":
			return []string{s.OwnerID}
		case "description":
			return []string{s.Description}
		}
		return nil
	}
	b.open("snapshotSet")
	for _, s := range described(q, f.snapshots, ids, values) {
		b.open("item")
		b.elem("snapshotId", s.ID)
		b.elem("volumeId", "vol-ffffffff") // EBS direct API snapshots have no source volume
		b.elem("status", s.State)
		b.elem("startTime", ec2Time(s.StartTime))
		b.elem("progress", strconv.Itoa(int(s.Progress))+"%")
		b.elem("ownerId", s.OwnerID)
		b.elem("volumeSize", strconv.FormatInt(s.VolumeSize, 10))
		b.elem("description", s.Description)
		b.elem("encrypted", "false")
		b.elem("storageTier", "standard")
		b.tagSet(s.Tags)
		b.close("item")
	}
	b.close("snapshotSet")
	return nil
}

func (f *Fake) deleteSnapshot(q *ec2Req, b *xb) *ec2Error {
	id := q.get("SnapshotId")
	s, ok := f.snapshots[id]
	if !ok || s.Region != q.region {
		return ec2Err("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	}
	// "You cannot delete a snapshot of the root device of an EBS volume used
	// by a registered AMI. You must first deregister the AMI."
	for _, imID := range sortedKeys(f.images) {
		for _, m := range f.images[imID].BlockDeviceMappings {
			if m.SnapshotID == id {
				return ec2Err("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", id, imID)
			}
		}
	}
	delete(f.snapshots, id)
	b.elem("return", "true")
	return nil
}

var (
	architectures       = []string{"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"}
	virtualizationTypes = []string{"hvm", "paravirtual"}
	bootModes           = []string{"legacy-bios", "uefi", "uefi-preferred"}
	volumeTypes         = []string{"standard", "io1", "io2", "gp2", "gp3", "sc1", "st1"}
)

func oneOf(param, v string, valid []string) *ec2Error {
	if !slices.Contains(valid, v) {
		return ec2Err("InvalidParameterValue", "Value (%s) for parameter %s is invalid. Valid values: %s", v, param, strings.Join(valid, ", "))
	}
	return nil
}

func (f *Fake) registerImage(q *ec2Req, b *xb) *ec2Error {
	im := &image{Image: Image{
		Region:         q.region,
		OwnerID:        f.opts.AccountID,
		Name:           q.get("Name"),
		Description:    q.get("Description"),
		State:          "pending",
		RootDeviceName: q.get("RootDeviceName"),
		BootMode:       q.get("BootMode"),
		ImdsSupport:    q.get("ImdsSupport"),
		TpmSupport:     q.get("TpmSupport"),
		CreationDate:   q.now,
		// Architecture: "Default: For Amazon EBS-backed AMIs, i386."
		Architecture: cmpOr(q.get("Architecture"), "i386"),
		// VirtualizationType: "Default: paravirtual".
		VirtualizationType: cmpOr(q.get("VirtualizationType"), "paravirtual"),
		SriovNetSupport:    q.get("SriovNetSupport"),
	}}
	// Name: "Constraints: 3-128 alphanumeric characters, parentheses (()),
	// square brackets ([]), spaces ( ), periods (.), slashes (/), dashes
	// (-), single quotes ('), at-signs (@), or underscores(_)". Required.
	if e := validAMIName(im.Name); e != nil {
		return e
	}
	if e := f.nameFree(q, im.Name); e != nil {
		return e
	}
	if q.get("ImageLocation") != "" {
		return ec2Err("InvalidParameterCombination", "this fake registers EBS-backed AMIs from snapshots only")
	}
	if e := oneOf("Architecture", im.Architecture, architectures); e != nil {
		return e
	}
	if e := oneOf("VirtualizationType", im.VirtualizationType, virtualizationTypes); e != nil {
		return e
	}
	if im.BootMode != "" {
		if e := oneOf("BootMode", im.BootMode, bootModes); e != nil {
			return e
		}
	}
	// ImdsSupport: "If you set the value to v2.0 …". The only valid value.
	if im.ImdsSupport != "" {
		if e := oneOf("ImdsSupport", im.ImdsSupport, []string{"v2.0"}); e != nil {
			return e
		}
	}
	ena, e := q.bool("EnaSupport")
	if e != nil {
		return e
	}
	// EnaSupport: "This option is supported only for HVM AMIs."
	if ena && im.VirtualizationType != "hvm" {
		return ec2Err("InvalidParameterCombination", "Enhanced networking with ENA is supported only for HVM AMIs.")
	}
	im.EnaSupport = ena
	mappings, e := f.blockDeviceMappings(q)
	if e != nil {
		return e
	}
	im.BlockDeviceMappings = mappings
	// RootDeviceName is required for an EBS-backed AMI and must name one of
	// the mappings, which must have a snapshot.
	if im.RootDeviceName == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter rootDeviceName")
	}
	root := slices.IndexFunc(mappings, func(m BlockDeviceMapping) bool { return m.DeviceName == im.RootDeviceName })
	if root < 0 || mappings[root].SnapshotID == "" {
		return ec2Err("InvalidBlockDeviceMapping", "The root device %s has no block device mapping with a snapshot.", im.RootDeviceName)
	}
	specs, e := q.tagSpecs("image", "snapshot")
	if e != nil {
		return e
	}
	im.Tags = specs["image"]
	if im.Tags == nil {
		im.Tags = map[string]string{}
	}
	for k, v := range specs["snapshot"] {
		for _, m := range mappings {
			f.snapshots[m.SnapshotID].Tags[k] = v
		}
	}
	f.addImage(q, b, im)
	return nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// nameFree refuses an AMI name already in use in the request's region: RegisterImage and
// CopyImage alike.
func (f *Fake) nameFree(q *ec2Req, name string) *ec2Error {
	for _, other := range f.images {
		if other.Region == q.region && other.Name == name {
			return ec2Err("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, other.ID)
		}
	}
	return nil
}

// addImage gives a registered or copied AMI its ID, holds it pending for
// Options.ImageAvailableDelay, and answers with the ID.
func (f *Fake) addImage(q *ec2Req, b *xb, im *image) {
	im.ID = f.newID("ami")
	im.availableAt = q.now.Add(f.opts.ImageAvailableDelay)
	f.images[im.ID] = im
	f.advance(q.now)
	b.elem("imageId", im.ID)
}

func validAMIName(name string) *ec2Error {
	if len(name) < 3 || len(name) > 128 {
		return ec2Err("InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long.")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("()[] ./-'@_", c)) {
			return ec2Err("InvalidAMIName.Malformed", "AMI name %s contains the invalid character %q.", name, c)
		}
	}
	return nil
}

// blockDeviceMappings decodes BlockDeviceMapping.N.* and checks each EBS
// snapshot: it must exist in this region and be completed, and the volume
// must be at least as large as the snapshot.
func (f *Fake) blockDeviceMappings(q *ec2Req) ([]BlockDeviceMapping, *ec2Error) {
	var out []BlockDeviceMapping
	for _, i := range q.indices("BlockDeviceMapping") {
		p := fmt.Sprintf("BlockDeviceMapping.%d.", i)
		m := BlockDeviceMapping{
			DeviceName: q.get(p + "DeviceName"),
			SnapshotID: q.get(p + "Ebs.SnapshotId"),
			VolumeType: q.get(p + "Ebs.VolumeType"),
		}
		if m.DeviceName == "" {
			return nil, ec2Err("InvalidBlockDeviceMapping", "Block device mapping %d has no device name.", i)
		}
		dot, e := q.bool(p + "Ebs.DeleteOnTermination")
		if e != nil {
			return nil, e
		}
		// DeleteOnTermination defaults to true for volumes created at launch.
		m.DeleteOnTermination = dot || q.get(p+"Ebs.DeleteOnTermination") == ""
		if m.Encrypted, e = q.bool(p + "Ebs.Encrypted"); e != nil {
			return nil, e
		}
		if m.VolumeType != "" {
			if e := oneOf("VolumeType", m.VolumeType, volumeTypes); e != nil {
				return nil, e
			}
		}
		if v := q.get(p + "Ebs.VolumeSize"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return nil, ec2Err("InvalidParameterValue", "Value (%s) for parameter volumeSize is invalid.", v)
			}
			m.VolumeSize = n
		}
		if m.SnapshotID != "" {
			s, ok := f.snapshots[m.SnapshotID]
			if !ok || s.Region != q.region {
				return nil, ec2Err("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", m.SnapshotID)
			}
			if s.State != "completed" {
				return nil, ec2Err("IncorrectState", "Snapshot %s is in state %s; it must be completed.", s.ID, s.State)
			}
			if m.VolumeSize == 0 {
				m.VolumeSize = s.VolumeSize
			}
			if m.VolumeSize < s.VolumeSize {
				return nil, ec2Err("InvalidBlockDeviceMapping", "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB",
					m.VolumeSize, s.ID, s.VolumeSize)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func (f *Fake) describeImages(q *ec2Req, b *xb) *ec2Error {
	ids := q.list("ImageId")
	for _, id := range ids {
		if !strings.HasPrefix(id, "ami-") {
			return ec2Err("InvalidAMIID.Malformed", "Invalid id: \"%s\"", id)
		}
		if im, ok := f.images[id]; !ok || im.Region != q.region {
			return ec2Err("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
	}
	values := func(im *image, filter string) []string {
		switch filter {
		case "image-id":
			return []string{im.ID}
		case "name":
			return []string{im.Name}
		case "state":
			return []string{im.State}
		case "architecture":
			return []string{im.Architecture}
		case "owner-id":
			return []string{im.OwnerID}
		}
		return nil
	}
	b.open("imagesSet")
	for _, im := range described(q, f.images, ids, values) {
		writeImage(b, im)
	}
	b.close("imagesSet")
	return nil
}

func writeImage(b *xb, im *image) {
	b.open("item")
	b.elem("imageId", im.ID)
	b.elem("imageLocation", im.OwnerID+"/"+im.Name)
	b.elem("imageState", im.State)
	b.elem("imageOwnerId", im.OwnerID)
	b.elem("creationDate", ec2Time(im.CreationDate))
	b.elem("isPublic", "false")
	b.elem("architecture", im.Architecture)
	b.elem("imageType", "machine")
	b.elem("name", im.Name)
	if im.Description != "" {
		b.elem("description", im.Description)
	}
	b.elem("rootDeviceType", "ebs")
	b.elem("rootDeviceName", im.RootDeviceName)
	b.open("blockDeviceMapping")
	for _, m := range im.BlockDeviceMappings {
		b.open("item")
		b.elem("deviceName", m.DeviceName)
		b.open("ebs")
		b.elem("snapshotId", m.SnapshotID)
		b.elem("volumeSize", strconv.FormatInt(m.VolumeSize, 10))
		b.elem("deleteOnTermination", strconv.FormatBool(m.DeleteOnTermination))
		b.elem("volumeType", cmpOr(m.VolumeType, "standard"))
		b.elem("encrypted", strconv.FormatBool(m.Encrypted))
		b.close("ebs")
		b.close("item")
	}
	b.close("blockDeviceMapping")
	b.elem("virtualizationType", im.VirtualizationType)
	b.elem("hypervisor", "xen")
	b.elem("enaSupport", strconv.FormatBool(im.EnaSupport))
	if im.SriovNetSupport != "" {
		b.elem("sriovNetSupport", im.SriovNetSupport)
	}
	if im.BootMode != "" {
		b.elem("bootMode", im.BootMode)
	}
	if im.ImdsSupport != "" {
		b.elem("imdsSupport", im.ImdsSupport)
	}
	if im.TpmSupport != "" {
		b.elem("tpmSupport", im.TpmSupport)
	}
	if im.SourceImageID != "" {
		b.elem("sourceImageId", im.SourceImageID)
		b.elem("sourceImageRegion", im.SourceRegion)
	}
	b.tagSet(im.Tags)
	b.close("item")
}

// copyImage copies an AMI into the region the request was sent to (its
// signing region): "You must specify the source AMI ID and its Region. The
// request is sent to the destination Region's endpoint."
func (f *Fake) copyImage(q *ec2Req, b *xb) *ec2Error {
	srcID, srcRegion, name := q.get("SourceImageId"), q.get("SourceRegion"), q.get("Name")
	switch {
	case srcID == "":
		return ec2Err("MissingParameter", "The request must contain the parameter SourceImageId")
	case srcRegion == "":
		return ec2Err("MissingParameter", "The request must contain the parameter SourceRegion")
	}
	if e := validAMIName(name); e != nil {
		return e
	}
	src, ok := f.images[srcID]
	if !ok || src.Region != srcRegion {
		return ec2Err("InvalidAMIID.NotFound", "The image id '[%s]' does not exist in %s", srcID, srcRegion)
	}
	if src.State != "available" {
		return ec2Err("IncorrectState", "Image %s is in state %s; it must be available.", srcID, src.State)
	}
	if e := f.nameFree(q, name); e != nil {
		return e
	}
	specs, e := q.tagSpecs("image")
	if e != nil {
		return e
	}
	copyTags, e := q.bool("CopyImageTags")
	if e != nil {
		return e
	}
	im := &image{Image: src.clone()}
	im.Region, im.Name, im.State, im.CreationDate = q.region, name, "pending", q.now
	im.Description = cmpOr(q.get("Description"), src.Description)
	im.SourceImageID, im.SourceRegion = src.ID, src.Region
	im.Tags = map[string]string{}
	if copyTags {
		maps.Copy(im.Tags, src.Tags)
	}
	maps.Copy(im.Tags, specs["image"])
	for i, m := range im.BlockDeviceMappings {
		if m.SnapshotID == "" {
			continue
		}
		orig := f.snapshots[m.SnapshotID]
		cp := &snapshot{Snapshot: orig.clone()}
		cp.ID, cp.Region, cp.CopiedFrom, cp.DirectAPI = f.newID("snap"), q.region, orig.ID, false
		cp.ClientToken, cp.StartTime = "", q.now
		f.snapshots[cp.ID] = cp
		im.BlockDeviceMappings[i].SnapshotID = cp.ID
	}
	f.addImage(q, b, im)
	return nil
}

func (f *Fake) deregisterImage(q *ec2Req, b *xb) *ec2Error {
	id := q.get("ImageId")
	im, ok := f.images[id]
	if !ok || im.Region != q.region {
		return ec2Err("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	}
	// Deregistering keeps the snapshots (unless DeleteAssociatedSnapshots,
	// which this fake does not implement).
	delete(f.images, id)
	b.elem("return", "true")
	return nil
}

func (f *Fake) createTags(q *ec2Req, b *xb) *ec2Error {
	ids := q.list("ResourceId")
	if len(ids) == 0 {
		return ec2Err("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags, e := q.tags("Tag")
	if e != nil {
		return e
	}
	var targets []map[string]string
	for _, id := range ids {
		var t map[string]string
		switch {
		case strings.HasPrefix(id, "ami-"):
			if im, ok := f.images[id]; ok && im.Region == q.region {
				t = im.Tags
			}
		case strings.HasPrefix(id, "snap-"):
			if s, ok := f.snapshots[id]; ok && s.Region == q.region {
				t = s.Tags
			}
		case strings.HasPrefix(id, "i-"):
			if in, ok := f.instances[id]; ok && in.Region == q.region {
				t = in.Tags
			}
		default:
			return ec2Err("InvalidID", "The ID '%s' is not valid", id)
		}
		if t == nil {
			return ec2Err("InvalidID", "The ID '%s' does not exist", id)
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		for k, v := range tags {
			t[k] = v
		}
	}
	b.elem("return", "true")
	return nil
}
