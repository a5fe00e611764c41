package awsfake

import (
	"bytes"
	"encoding/base64"
	stdimage "image"
	"image/color"
	"image/jpeg"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// instanceStateCodes are the documented InstanceState codes.
var instanceStateCodes = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

func (f *Fake) runInstances(q *ec2Req, b *xb) *ec2Error {
	imageID := q.get("ImageId")
	if imageID == "" {
		return ec2Err("MissingParameter", "The request must contain the parameter ImageId")
	}
	im, ok := f.images[imageID]
	if !ok || im.Region != q.region {
		return ec2Err("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", imageID)
	}
	if im.State != "available" {
		return ec2Err("InvalidAMIID.Unavailable", "The image id '[%s]' is not available (state %s)", imageID, im.State)
	}
	minCount, err1 := strconv.Atoi(q.get("MinCount"))
	maxCount, err2 := strconv.Atoi(q.get("MaxCount"))
	if err1 != nil || err2 != nil || minCount < 1 || maxCount < minCount {
		return ec2Err("InvalidParameterValue", "MinCount and MaxCount must be at least 1 and MinCount <= MaxCount.")
	}
	subnet := q.get("SubnetId")
	if subnet != "" && !strings.HasPrefix(subnet, "subnet-") {
		return ec2Err("InvalidSubnetID.Malformed", "The subnet ID '%s' is malformed", subnet)
	}
	groups := q.list("SecurityGroupId")
	for _, g := range groups {
		if !strings.HasPrefix(g, "sg-") {
			return ec2Err("InvalidGroupId.Malformed", "Invalid id: \"%s\"", g)
		}
	}
	specs, e := q.tagSpecs("instance", "volume")
	if e != nil {
		return e
	}
	resID := f.newID("r")
	b.elem("reservationId", resID)
	b.elem("ownerId", f.opts.AccountID)
	b.open("groupSet")
	b.close("groupSet")
	b.open("instancesSet")
	for i := 0; i < maxCount; i++ {
		in := &instance{Instance: Instance{
			ID:                 f.newID("i"),
			Region:             q.region,
			ImageID:            imageID,
			InstanceType:       cmpOr(q.get("InstanceType"), "m1.small"), // documented default
			SubnetID:           subnet,
			SecurityGroupIDs:   groups,
			KeyName:            q.get("KeyName"),
			UserData:           q.get("UserData"),
			State:              "pending",
			Tags:               map[string]string{},
			LaunchTime:         q.now,
			ReservationID:      resID,
			MetadataHTTPTokens: q.get("MetadataOptions.HttpTokens"),
		}}
		for k, v := range specs["instance"] {
			in.Tags[k] = v
		}
		in.runningAt = q.now.Add(f.opts.InstanceRunningDelay)
		f.instances[in.ID] = in
		writeInstance(b, in, i)
	}
	b.close("instancesSet")
	return nil
}

func writeState(b *xb, name, state string) {
	b.open(name)
	b.elem("code", strconv.Itoa(instanceStateCodes[state]))
	b.elem("name", state)
	b.close(name)
}

func writeInstance(b *xb, in *instance, launchIndex int) {
	b.open("item")
	b.elem("instanceId", in.ID)
	b.elem("imageId", in.ImageID)
	writeState(b, "instanceState", in.State)
	b.elem("instanceType", in.InstanceType)
	b.elem("amiLaunchIndex", strconv.Itoa(launchIndex))
	b.elem("launchTime", ec2Time(in.LaunchTime))
	if in.SubnetID != "" {
		b.elem("subnetId", in.SubnetID)
	}
	if in.KeyName != "" {
		b.elem("keyName", in.KeyName)
	}
	b.open("groupSet")
	for _, g := range in.SecurityGroupIDs {
		b.open("item")
		b.elem("groupId", g)
		b.close("item")
	}
	b.close("groupSet")
	b.tagSet(in.Tags)
	b.close("item")
}

func (f *Fake) instance(q *ec2Req, id string) (*instance, *ec2Error) {
	in, ok := f.instances[id]
	if !ok || in.Region != q.region {
		return nil, ec2Err("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	return in, nil
}

func (f *Fake) describeInstances(q *ec2Req, b *xb) *ec2Error {
	ids := q.list("InstanceId")
	for _, id := range ids {
		if _, e := f.instance(q, id); e != nil {
			return e
		}
	}
	filters := q.filters()
	// One reservation per RunInstances call, as EC2 reports them.
	byRes := map[string][]*instance{}
	for _, id := range sortedKeys(f.instances) {
		in := f.instances[id]
		if in.Region != q.region || (len(ids) > 0 && !slices.Contains(ids, id)) {
			continue
		}
		if !matchFilters(filters, in.Tags, func(name string) []string {
			switch name {
			case "instance-id":
				return []string{in.ID}
			case "instance-state-name":
				return []string{in.State}
			case "image-id":
				return []string{in.ImageID}
			case "subnet-id":
				return []string{in.SubnetID}
			}
			return nil
		}) {
			continue
		}
		byRes[in.ReservationID] = append(byRes[in.ReservationID], in)
	}
	b.open("reservationSet")
	for _, res := range sortedKeys(byRes) {
		b.open("item")
		b.elem("reservationId", res)
		b.elem("ownerId", f.opts.AccountID)
		b.open("instancesSet")
		for i, in := range byRes[res] {
			writeInstance(b, in, i)
		}
		b.close("instancesSet")
		b.close("item")
	}
	b.close("reservationSet")
	return nil
}

func (f *Fake) terminateInstances(q *ec2Req, b *xb) *ec2Error {
	ids := q.list("InstanceId")
	if len(ids) == 0 {
		return ec2Err("MissingParameter", "The request must contain the parameter InstanceId")
	}
	var ins []*instance
	for _, id := range ids {
		in, e := f.instance(q, id)
		if e != nil {
			return e
		}
		ins = append(ins, in)
	}
	b.open("instancesSet")
	for _, in := range ins {
		prev := in.State
		if in.State != "terminated" && in.State != "shutting-down" {
			in.State = "shutting-down"
			in.terminatedAt = q.now.Add(f.opts.InstanceTerminateDelay)
		}
		b.open("item")
		b.elem("instanceId", in.ID)
		writeState(b, "currentState", in.State)
		writeState(b, "previousState", prev)
		b.close("item")
	}
	b.close("instancesSet")
	f.advance(q.now)
	return nil
}

func (f *Fake) getConsoleOutput(q *ec2Req, b *xb) *ec2Error {
	in, e := f.instance(q, q.get("InstanceId"))
	if e != nil {
		return e
	}
	text, ok := f.console[in.ID]
	if !ok {
		text = f.opts.ConsoleOutput
	}
	b.elem("instanceId", in.ID)
	b.elem("timestamp", ec2Time(q.now))
	// "The console output, base64-encoded."
	b.elem("output", base64.StdEncoding.EncodeToString([]byte(text)))
	return nil
}

func (f *Fake) getConsoleScreenshot(q *ec2Req, b *xb) *ec2Error {
	in, e := f.instance(q, q.get("InstanceId"))
	if e != nil {
		return e
	}
	if in.State == "terminated" {
		return ec2Err("IncorrectInstanceState", "The instance '%s' is terminated.", in.ID)
	}
	b.elem("instanceId", in.ID)
	// "The data that comprises the image" — a base64 JPEG.
	b.elem("imageData", base64.StdEncoding.EncodeToString(Screenshot()))
	return nil
}

// Screenshot returns the JPEG that GetConsoleScreenshot serves.
var Screenshot = sync.OnceValue(func() []byte {
	img := stdimage.NewGray(stdimage.Rect(0, 0, 16, 8))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 2)
	}
	img.SetGray(0, 0, color.Gray{Y: 255})
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		panic("awsfake: encoding the screenshot: " + err.Error()) // cannot happen for an in-memory image
	}
	return buf.Bytes()
})
