package cloud

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/imaged/imaged/images"
)

// S3 is the part of the S3 client the published contract uses (*s3.Client).
type S3 interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// ImagesEC2 is the part of the EC2 client promotion and pruning use (*ec2.Client), one per region.
type ImagesEC2 interface {
	ec2.DescribeImagesAPIClient
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, opts ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, opts ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

const (
	// Schema is the version of amis.json this code reads and writes.
	Schema = 1
	// HistoryLen is how many earlier entries a channel remembers for rollback.
	HistoryLen = 10

	maxContract    = 16 << 20
	updateAttempts = 8
)

// AMIs is the published contract, amis.json: for each image name, what each channel points at,
// per region. A worker checks at boot that it runs a current AMI: the AMI id it was launched from
// (instance metadata) must be Images[name].Channels[channel].AMIs[region].
//
// Field names are stable. Readers ignore fields they do not know; a change an older reader
// would misread, or an older writer would lose, increments Schema, and a reader refuses a
// schema it does not know (ParseAMIs).
type AMIs struct {
	Schema  int                       `json:"schema"`
	Updated time.Time                 `json:"updated"` // the last change, RFC 3339
	Images  map[string]*ImageChannels `json:"images"`  // by image name
}

// ImageChannels are the channels of one image.
type ImageChannels struct {
	// Channels are what each channel (stable, beta, …) points at now.
	Channels map[string]ChannelEntry `json:"channels"`
	// History holds, per channel, the entries it pointed at before, newest first, at most
	// HistoryLen: rollback pops the head; pruning keeps their AMIs.
	History map[string][]ChannelEntry `json:"history,omitempty"`
}

// ChannelEntry is one version of an image as a channel points at it.
type ChannelEntry struct {
	Version string            `json:"version"`
	Digest  images.Digest     `json:"digest"` // of the raw disk image: the AMIs' imaged:digest tag
	Date    time.Time         `json:"date"`   // when it became the channel's current entry (promote or rollback)
	AMIs    map[string]string `json:"amis"`   // region → AMI id
}

// NewAMIs returns an empty document.
func NewAMIs() *AMIs { return &AMIs{Schema: Schema, Images: map[string]*ImageChannels{}} }

// ParseAMIs decodes amis.json and checks it: the schema must be one this code knows, every
// channel name valid, every entry complete.
func ParseAMIs(b []byte) (*AMIs, error) {
	var head struct {
		Schema *int `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("cloud: amis.json: %w", err)
	}
	if head.Schema == nil || *head.Schema != Schema {
		v := "none"
		if head.Schema != nil {
			v = fmt.Sprint(*head.Schema)
		}
		return nil, fmt.Errorf("cloud: amis.json has schema %s; this imaged knows schema %d only (a newer imaged wrote it? upgrade)", v, Schema)
	}
	doc := NewAMIs()
	if err := json.Unmarshal(b, doc); err != nil {
		return nil, fmt.Errorf("cloud: amis.json: %w", err)
	}
	if doc.Images == nil {
		doc.Images = map[string]*ImageChannels{}
	}
	for name, ic := range doc.Images {
		if name == "" || ic == nil {
			return nil, fmt.Errorf("cloud: amis.json: image %q: an empty name, or null instead of its channels", name)
		}
		if ic.Channels == nil {
			ic.Channels = map[string]ChannelEntry{}
		}
		if ic.History == nil {
			ic.History = map[string][]ChannelEntry{}
		}
		for ch, e := range ic.Channels {
			if err := checkEntry(name, ch, e); err != nil {
				return nil, err
			}
		}
		for ch, h := range ic.History {
			for _, e := range h {
				if err := checkEntry(name, ch, e); err != nil {
					return nil, err
				}
			}
		}
	}
	return doc, nil
}

func checkEntry(name, channel string, e ChannelEntry) error {
	if err := checkChannel(channel); err != nil {
		return fmt.Errorf("cloud: amis.json: image %s: %w", name, err)
	}
	ok := e.Version != "" && !e.Digest.IsZero() && len(e.AMIs) > 0
	for region, ami := range e.AMIs {
		ok = ok && region != "" && ami != ""
	}
	if !ok {
		return fmt.Errorf("cloud: amis.json: image %s channel %s: an entry lacks its version, digest or AMIs", name, channel)
	}
	return nil
}

// Marshal encodes the document as it is published: indented JSON, keys sorted, a final newline.
func (a *AMIs) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cloud: encode amis.json: %w", err)
	}
	return append(b, '\n'), nil
}

// Current returns what channel of image name points at.
func (a *AMIs) Current(name, channel string) (ChannelEntry, bool) {
	ic := a.Images[name]
	if ic == nil {
		return ChannelEntry{}, false
	}
	e, ok := ic.Channels[channel]
	return e, ok
}

func (a *AMIs) image(name string) *ImageChannels {
	ic := a.Images[name]
	if ic == nil {
		ic = &ImageChannels{Channels: map[string]ChannelEntry{}, History: map[string][]ChannelEntry{}}
		a.Images[name] = ic
	}
	return ic
}

// checkChannel: [a-z0-9][a-z0-9._-]*, at most 63 characters.
func checkChannel(ch string) error {
	ok := ch != "" && len(ch) <= 63 && ch[0] != '.' && ch[0] != '_' && ch[0] != '-'
	for _, c := range ch {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	}
	if !ok {
		return fmt.Errorf("invalid channel name %q: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63", ch)
	}
	return nil
}

// Contract is amis.json in S3.
type Contract struct {
	S3          S3
	Bucket, Key string
}

func (c Contract) String() string { return "s3://" + c.Bucket + "/" + c.Key }

// Load reads the document and its ETag. A missing object is an empty document and ETag "".
func (c Contract) Load(ctx context.Context) (*AMIs, string, error) {
	out, err := c.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Bucket), Key: aws.String(c.Key)})
	if nsk := (*s3types.NoSuchKey)(nil); errors.As(err, &nsk) {
		return NewAMIs(), "", nil
	}
	if err != nil {
		// Without s3:ListBucket, S3 answers a missing key with 403 AccessDenied.
		return nil, "", fmt.Errorf("cloud: read %s (needs s3:GetObject, and s3:ListBucket before it exists): %w", c, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxContract+1))
	if err != nil {
		return nil, "", fmt.Errorf("cloud: read %s: %w", c, err)
	}
	if len(b) > maxContract {
		return nil, "", fmt.Errorf("cloud: read %s: larger than %d bytes; not an amis.json", c, maxContract)
	}
	etag := aws.ToString(out.ETag)
	if etag == "" {
		return nil, "", fmt.Errorf("cloud: read %s: no ETag in the answer, so it cannot be updated safely", c)
	}
	doc, err := ParseAMIs(b)
	if err != nil {
		return nil, "", fmt.Errorf("%w (in %s)", err, c)
	}
	return doc, etag, nil
}

// Update applies fn to the current document and writes it back, only if it is still the
// document fn saw (PutObject If-Match its ETag, or If-None-Match * when there was none): when
// someone else wrote in between, it reads again and reapplies fn, so concurrent updates never
// lose one another's change. fn is responsible for Updated; if fn changes nothing, nothing is
// written. It returns the document as written (or as read, when unchanged).
func (c Contract) Update(ctx context.Context, fn func(*AMIs) error) (*AMIs, error) {
	var last error
	for range updateAttempts {
		doc, etag, err := c.Load(ctx)
		if err != nil {
			return nil, err
		}
		before, err := doc.Marshal()
		if err != nil {
			return nil, err
		}
		if err := fn(doc); err != nil {
			return nil, err
		}
		after, err := doc.Marshal()
		if err != nil {
			return nil, err
		}
		if bytes.Equal(before, after) {
			return doc, nil
		}
		in := &s3.PutObjectInput{Bucket: aws.String(c.Bucket), Key: aws.String(c.Key),
			Body: bytes.NewReader(after), ContentType: aws.String("application/json")}
		if etag == "" {
			in.IfNoneMatch = aws.String("*")
		} else {
			in.IfMatch = aws.String(etag)
		}
		_, err = c.S3.PutObject(ctx, in)
		if err == nil {
			return doc, nil
		}
		var ae smithy.APIError
		if !errors.As(err, &ae) {
			return nil, fmt.Errorf("cloud: write %s: %w", c, err)
		}
		switch ae.ErrorCode() {
		// 412: someone wrote since we read. 409 ConditionalRequestConflict: "On a 409 failure
		// you should fetch the object's ETag and retry the upload." 404 NoSuchKey: If-Match on
		// an object deleted since we read.
		case "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey":
			last = err
		default:
			return nil, fmt.Errorf("cloud: write %s (needs s3:PutObject): %w", c, err)
		}
	}
	return nil, fmt.Errorf("cloud: write %s: written by someone else before each of %d attempts; try again: %w", c, updateAttempts, last)
}

// Promote points channel of image name at version (whose raw image has digest) in every region
// of ec2s, where an available AMI of this account tagged imaged:digest must exist. The entry the
// channel pointed at before goes to the head of its history. Promoting what the channel already
// points at changes nothing (the entry returned is the existing one, Date included); promoting
// its digest again with other AMIs refreshes the entry without touching the history. A channel
// never stops serving a region: the promoted version must be in every region it serves now.
func Promote(ctx context.Context, c Contract, ec2s map[string]ImagesEC2, name, version string, digest images.Digest, channel string, now time.Time) (ChannelEntry, error) {
	what := fmt.Sprintf("promote %s@%s to %s", name, version, channel)
	if err := checkRequest(name, channel, ec2s); err != nil {
		return ChannelEntry{}, fmt.Errorf("cloud: %s: %w", what, err)
	}
	if version == "" || digest.IsZero() {
		return ChannelEntry{}, fmt.Errorf("cloud: %s: need a version and a digest", what)
	}
	entry := ChannelEntry{Version: version, Digest: digest, Date: now.UTC().Truncate(time.Second), AMIs: map[string]string{}}
	var missing []string
	for _, region := range slices.Sorted(maps.Keys(ec2s)) {
		found, err := listImages(ctx, ec2s[region], filter("tag:"+TagDigest, digest.String()), filter("state", "available"))
		if err != nil {
			return ChannelEntry{}, fmt.Errorf("cloud: %s: look for %s in %s: %w", what, digest, region, err)
		}
		if len(found) == 0 {
			missing = append(missing, region)
			continue
		}
		entry.AMIs[region] = aws.ToString(found[0].ImageId)
	}
	if len(missing) > 0 {
		return ChannelEntry{}, fmt.Errorf("cloud: %s: no available AMI tagged %s=%s in %s; publish it there first (imaged ami push -copy-to %s %s@%s) and promote again",
			what, TagDigest, digest, strings.Join(missing, ", "), strings.Join(missing, ","), name, version)
	}
	var out ChannelEntry
	_, err := c.Update(ctx, func(doc *AMIs) error {
		ic := doc.image(name)
		cur, ok := ic.Channels[channel]
		if ok && cur.Digest == digest && maps.Equal(cur.AMIs, entry.AMIs) {
			out = cur
			return nil
		}
		if ok {
			if lost := lostRegions(cur, entry); len(lost) > 0 {
				return fmt.Errorf("cloud: %s: the channel serves %s too, where %s has no AMI here; include those regions (publish there first)",
					what, strings.Join(lost, ", "), version)
			}
			if cur.Digest != digest {
				h := slices.Insert(ic.History[channel], 0, cur)
				ic.History[channel] = h[:min(len(h), HistoryLen)]
			}
		}
		ic.Channels[channel], doc.Updated, out = entry, entry.Date, entry
		return nil
	})
	if err != nil {
		return ChannelEntry{}, err
	}
	return out, nil
}

// Rollback points channel of image name back at the head of its history, which is removed from
// it: the entry rolled back from is dropped, so a second rollback goes further back. It refuses
// when there is no history, or when an AMI of the entry rolled back to is no longer available
// (each region it names needs a client in ec2s), or when it lacks a region the channel serves.
func Rollback(ctx context.Context, c Contract, ec2s map[string]ImagesEC2, name, channel string, now time.Time) (from, to ChannelEntry, err error) {
	what := fmt.Sprintf("roll back %s@%s", name, channel)
	if err := checkRequest(name, channel, ec2s); err != nil {
		return from, to, fmt.Errorf("cloud: %s: %w", what, err)
	}
	_, err = c.Update(ctx, func(doc *AMIs) error {
		ic := doc.Images[name]
		if ic == nil {
			return fmt.Errorf("cloud: %s: %s has no channels in %s", what, name, c)
		}
		cur, ok := ic.Channels[channel]
		if !ok {
			return fmt.Errorf("cloud: %s: no channel %s in %s", what, channel, c)
		}
		h := ic.History[channel]
		if len(h) == 0 {
			return fmt.Errorf("cloud: %s: no earlier version to roll back to (it points at %s); promote one instead", what, cur.Version)
		}
		prev := h[0]
		if lost := lostRegions(cur, prev); len(lost) > 0 {
			return fmt.Errorf("cloud: %s: %s has no AMI in %s, which the channel serves; promote a version published there instead",
				what, prev.Version, strings.Join(lost, ", "))
		}
		for _, region := range slices.Sorted(maps.Keys(prev.AMIs)) {
			ami := prev.AMIs[region]
			e := ec2s[region]
			if e == nil {
				return fmt.Errorf("cloud: %s: %s is in %s too: give that region so its AMI %s can be checked", what, prev.Version, region, ami)
			}
			found, err := listImages(ctx, e, filter("image-id", ami), filter("state", "available"))
			if err != nil {
				return fmt.Errorf("cloud: %s: look for %s in %s: %w", what, ami, region, err)
			}
			if len(found) == 0 {
				return fmt.Errorf("cloud: %s: AMI %s of %s in %s is no longer available (deregistered?); promote a version that exists instead",
					what, ami, prev.Version, region)
			}
		}
		from, to = cur, prev
		to.Date = now.UTC().Truncate(time.Second)
		ic.Channels[channel], ic.History[channel], doc.Updated = to, h[1:], to.Date
		if len(ic.History[channel]) == 0 {
			delete(ic.History, channel)
		}
		return nil
	})
	if err != nil {
		return ChannelEntry{}, ChannelEntry{}, err
	}
	return from, to, nil
}

// lostRegions are the regions cur serves that next does not.
func lostRegions(cur, next ChannelEntry) []string {
	var lost []string
	for _, r := range slices.Sorted(maps.Keys(cur.AMIs)) {
		if next.AMIs[r] == "" {
			lost = append(lost, r)
		}
	}
	return lost
}

func checkRequest(name, channel string, ec2s map[string]ImagesEC2) error {
	if name == "" {
		return errors.New("no image name")
	}
	if err := checkChannel(channel); err != nil {
		return err
	}
	if len(ec2s) == 0 {
		return errors.New("no regions given")
	}
	return nil
}

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

// listImages returns this account's AMIs matching filters, newest first.
func listImages(ctx context.Context, c ImagesEC2, filters ...ec2types.Filter) ([]ec2types.Image, error) {
	var out []ec2types.Image
	p := ec2.NewDescribeImagesPaginator(c, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: filters})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Images...)
	}
	slices.SortStableFunc(out, func(a, b ec2types.Image) int {
		// CreationDate is ISO 8601 in UTC ("2026-11-04T12:00:00.000Z"): it sorts as text.
		return cmp.Or(strings.Compare(aws.ToString(b.CreationDate), aws.ToString(a.CreationDate)),
			strings.Compare(aws.ToString(a.ImageId), aws.ToString(b.ImageId)))
	})
	return out, nil
}
