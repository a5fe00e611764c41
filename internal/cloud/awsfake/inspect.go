package awsfake

import (
	"maps"
	"slices"
	"time"
)

// Snapshot is an EBS snapshot as the Fake holds it.
type Snapshot struct {
	ID, Region, OwnerID string
	VolumeSize          int64  // GiB
	State               string // pending, completed, error
	Progress            int32  // percent, as last reported by PutSnapshotBlock
	Description         string
	Tags                map[string]string
	Timeout             int32 // minutes
	ClientToken         string
	ParentSnapshotID    string
	StartTime           time.Time
	// Blocks are the blocks written through PutSnapshotBlock, by index.
	Blocks map[int32]Block
	// ChangedBlocksCount and AggregateChecksum are what CompleteSnapshot
	// was given (AggregateChecksum empty when none was sent).
	ChangedBlocksCount int32
	AggregateChecksum  string
	// DirectAPI is false for snapshots created by CopyImage.
	DirectAPI bool
	// CopiedFrom is the source snapshot of a CopyImage copy.
	CopiedFrom string
}

// Block is one written 512 KiB block.
type Block struct {
	Checksum string // base64 SHA-256
	Data     []byte // nil with Options.DiscardBlockData
}

type snapshot struct {
	Snapshot
	completeAt   time.Time // zero until CompleteSnapshot was accepted
	lastActivity time.Time
}

// Image is an AMI.
type Image struct {
	ID, Region, OwnerID string
	Name, Description   string
	State               string // pending, available
	Architecture        string
	VirtualizationType  string
	RootDeviceName      string
	BlockDeviceMappings []BlockDeviceMapping
	EnaSupport          bool
	SriovNetSupport     string
	BootMode            string
	ImdsSupport         string
	TpmSupport          string
	Tags                map[string]string
	CreationDate        time.Time
	// SourceImageID and SourceRegion are set on CopyImage copies.
	SourceImageID, SourceRegion string
}

// BlockDeviceMapping is one RegisterImage block device mapping.
type BlockDeviceMapping struct {
	DeviceName          string
	SnapshotID          string
	VolumeSize          int64
	VolumeType          string
	DeleteOnTermination bool
	Encrypted           bool
}

type image struct {
	Image
	availableAt time.Time
}

// Instance is an EC2 instance.
type Instance struct {
	ID, Region         string
	ImageID            string
	InstanceType       string
	SubnetID           string
	SecurityGroupIDs   []string
	KeyName            string
	UserData           string
	State              string // pending, running, shutting-down, terminated
	Tags               map[string]string
	LaunchTime         time.Time
	ReservationID      string
	MetadataHTTPTokens string
}

type instance struct {
	Instance
	runningAt, terminatedAt time.Time
}

// Object is an S3 object.
type Object struct {
	Data         []byte
	ContentType  string
	ETag         string
	Metadata     map[string]string
	LastModified time.Time
}

// Snapshot returns a copy of snapshot id.
func (f *Fake) Snapshot(id string) (Snapshot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(f.opts.Now())
	s, ok := f.snapshots[id]
	if !ok {
		return Snapshot{}, false
	}
	return s.clone(), true
}

// Snapshots returns copies of all snapshots in region ("" for all), by ID.
func (f *Fake) Snapshots(region string) []Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(f.opts.Now())
	return copies(f.snapshots, region, (*snapshot).clone)
}

func (s *snapshot) clone() Snapshot {
	c := s.Snapshot
	c.Tags = maps.Clone(s.Tags)
	c.Blocks = maps.Clone(s.Blocks)
	return c
}

// Image returns a copy of AMI id.
func (f *Fake) Image(id string) (Image, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(f.opts.Now())
	im, ok := f.images[id]
	if !ok {
		return Image{}, false
	}
	return im.clone(), true
}

// Images returns copies of all registered AMIs in region ("" for all).
func (f *Fake) Images(region string) []Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(f.opts.Now())
	return copies(f.images, region, (*image).clone)
}

func (im *image) clone() Image {
	c := im.Image
	c.Tags = maps.Clone(im.Tags)
	c.BlockDeviceMappings = slices.Clone(im.BlockDeviceMappings)
	return c
}

// Instances returns copies of all instances in region ("" for all),
// terminated ones included.
func (f *Fake) Instances(region string) []Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(f.opts.Now())
	return copies(f.instances, region, (*instance).clone)
}

func (in *instance) clone() Instance {
	c := in.Instance
	c.Tags = maps.Clone(in.Tags)
	c.SecurityGroupIDs = slices.Clone(in.SecurityGroupIDs)
	return c
}

// copies returns clone(o) of each object in region ("" for all), by ID: what a test inspects
// is a copy it can keep while the fake goes on.
func copies[T regional, C any](objs map[string]T, region string, clone func(T) C) []C {
	var out []C
	for _, id := range sortedKeys(objs) {
		if r, _ := objs[id].regionAndTags(); region == "" || r == region {
			out = append(out, clone(objs[id]))
		}
	}
	return out
}

// Object returns a copy of S3 object bucket/key.
func (f *Fake) Object(bucket, key string) (Object, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.buckets[bucket][key]
	if !ok {
		return Object{}, false
	}
	c := *o
	c.Data = slices.Clone(o.Data)
	c.Metadata = maps.Clone(o.Metadata)
	return c, true
}

// CreateBucket creates an empty bucket if it does not exist.
func (f *Fake) CreateBucket(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buckets[name] == nil {
		f.buckets[name] = map[string]*Object{}
	}
}

// Requests returns how many requests each operation received, faulted and
// refused ones included.
func (f *Fake) Requests() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.requests)
}

// RequestCount returns how many requests operation op received.
func (f *Fake) RequestCount(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[op]
}

// SetConsoleOutput sets what GetConsoleOutput returns for instance id.
func (f *Fake) SetConsoleOutput(id, text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.console[id] = text
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
