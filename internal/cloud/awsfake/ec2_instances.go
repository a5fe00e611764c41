package awsfake

import (
	"bytes"
	"encoding/base64"
	stdimage "image"
	"image/color"
	"image/jpeg"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// instanceStateCodes are the documented InstanceState codes.
var instanceStateCodes = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

// launch is what the Fake keeps about an instance beyond Instance: its
// private address, client token and instance metadata options.
type launch struct {
	privateIP   netip.Addr
	clientToken string
	imds        metadataOpts
}

// runToken is a RunInstances call made with a ClientToken.
type runToken struct {
	reservationID string
	request       string // the call's parameters, to detect a mismatching retry
	instanceIDs   []string
}

// xenFamilies are the instance families on the Xen hypervisor; every other
// family is built on the Nitro System (i3.metal is Nitro too).
var xenFamilies = []string{"c1", "c3", "c4", "d2", "f1", "g2", "g3", "g3s", "h1", "i2", "i3",
	"m1", "m2", "m3", "m4", "p2", "p3", "r3", "r4", "t1", "t2", "x1", "x1e"}

func nitro(instanceType string) bool {
	family, size, _ := strings.Cut(instanceType, ".")
	return !slices.Contains(xenFamilies, family) || family == "i3" && size == "metal"
}

func (f *Fake) runInstances(q *ec2Req, b *xb) *ec2Error {
	// ClientToken: "Constraints: Maximum 64 ASCII characters." A retry with
	// the same token returns the first call's reservation; one with other
	// parameters is refused.
	token := q.get("ClientToken")
	if len(token) > 64 {
		return ec2Err("InvalidParameterValue", "Value (%s) for parameter clientToken is invalid. Maximum 64 characters.", token)
	}
	request := requestSignature(q.form)
	if rt, ok := f.runTokens[q.region+"/"+token]; ok && token != "" {
		if rt.request != request {
			return ec2Err("IdempotentParameterMismatch", "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
		}
		f.writeReservation(b, rt.reservationID, rt.instanceIDs)
		return nil
	}
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
	instanceType := cmpOr(q.get("InstanceType"), "m1.small") // documented default
	if nitro(instanceType) && !im.EnaSupport {
		return ec2Err("InvalidParameterCombination", "Enhanced networking with the Elastic Network Adapter (ENA) is required for the '%s' instance type. "+
			"Ensure that you are using an AMI that is enabled for ENA.", instanceType)
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
	if v := q.get("InstanceInitiatedShutdownBehavior"); v != "" {
		if e := oneOf("InstanceInitiatedShutdownBehavior", v, []string{"stop", "terminate"}); e != nil {
			return e
		}
	}
	imds, e := metadataOptions(q, im)
	if e != nil {
		return e
	}
	specs, e := q.tagSpecs("instance", "volume")
	if e != nil {
		return e
	}
	resID := f.newID("r")
	var ids []string
	for range maxCount {
		in := &instance{Instance: Instance{
			ID:                 f.newID("i"),
			Region:             q.region,
			ImageID:            imageID,
			InstanceType:       instanceType,
			SubnetID:           subnet,
			SecurityGroupIDs:   groups,
			KeyName:            q.get("KeyName"),
			UserData:           q.get("UserData"),
			State:              "pending",
			Tags:               map[string]string{},
			LaunchTime:         q.now,
			ReservationID:      resID,
			MetadataHTTPTokens: imds.httpTokens,
		}}
		for k, v := range specs["instance"] {
			in.Tags[k] = v
		}
		in.runningAt = q.now.Add(f.opts.InstanceRunningDelay)
		f.instances[in.ID] = in
		f.launches[in.ID] = &launch{privateIP: f.privateIP(), clientToken: token, imds: imds}
		ids = append(ids, in.ID)
	}
	if token != "" {
		f.runTokens[q.region+"/"+token] = runToken{reservationID: resID, request: request, instanceIDs: ids}
	}
	f.writeReservation(b, resID, ids)
	return nil
}

// metadataOpts are RunInstances' MetadataOptions after defaults.
type metadataOpts struct {
	httpTokens, httpEndpoint string
	hopLimit                 int
}

// metadataOptions validates MetadataOptions (InstanceMetadataOptionsRequest)
// and applies the defaults: HttpEndpoint enabled; HttpTokens optional and a
// hop limit of 1, except that an AMI registered with ImdsSupport v2.0 makes
// them required and 2 ("instances launched from this AMI will have HttpTokens
// automatically set to required and HttpPutResponseHopLimit set to 2").
func metadataOptions(q *ec2Req, im *image) (metadataOpts, *ec2Error) {
	m := metadataOpts{httpTokens: "optional", httpEndpoint: "enabled", hopLimit: 1}
	if im.ImdsSupport == "v2.0" {
		m.httpTokens, m.hopLimit = "required", 2
	}
	if v := q.get("MetadataOptions.HttpTokens"); v != "" {
		if e := oneOf("MetadataOptions.HttpTokens", v, []string{"optional", "required"}); e != nil {
			return m, e
		}
		m.httpTokens = v
	}
	if v := q.get("MetadataOptions.HttpEndpoint"); v != "" {
		if e := oneOf("MetadataOptions.HttpEndpoint", v, []string{"enabled", "disabled"}); e != nil {
			return m, e
		}
		m.httpEndpoint = v
	}
	for _, k := range []string{"MetadataOptions.HttpProtocolIpv6", "MetadataOptions.InstanceMetadataTags"} {
		if v := q.get(k); v != "" {
			if e := oneOf(k, v, []string{"enabled", "disabled"}); e != nil {
				return m, e
			}
		}
	}
	if v := q.get("MetadataOptions.HttpPutResponseHopLimit"); v != "" {
		// "Possible values: Integers from 1 to 64".
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return m, ec2Err("InvalidParameterValue", "Value (%s) for parameter MetadataOptions.HttpPutResponseHopLimit is invalid. Valid values: 1 to 64", v)
		}
		m.hopLimit = n
	}
	return m, nil
}

// privateIP is the next instance's private address. Called with f.mu held.
func (f *Fake) privateIP() netip.Addr {
	if f.opts.InstancePrivateIP.IsValid() {
		return f.opts.InstancePrivateIP
	}
	// "The first four IP addresses and the last IP address in each subnet
	// CIDR block are not available": hosts start at .4.
	n := f.hosts + 4
	f.hosts++
	return netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)})
}

// requestSignature is a request's parameters without the ones that differ
// between retries of the same call.
func requestSignature(form url.Values) string {
	v := url.Values{}
	for k, vs := range form {
		if k != "ClientToken" && k != "Version" {
			v[k] = vs
		}
	}
	return v.Encode()
}

func (f *Fake) writeReservation(b *xb, resID string, ids []string) {
	b.elem("reservationId", resID)
	b.elem("ownerId", f.opts.AccountID)
	b.open("groupSet")
	b.close("groupSet")
	b.open("instancesSet")
	for i, id := range ids {
		f.writeInstance(b, f.instances[id], i)
	}
	b.close("instancesSet")
}

func writeState(b *xb, name, state string) {
	b.open(name)
	b.elem("code", strconv.Itoa(instanceStateCodes[state]))
	b.elem("name", state)
	b.close(name)
}

func (f *Fake) writeInstance(b *xb, in *instance, launchIndex int) {
	l := f.launches[in.ID]
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
	// A terminated instance has released its network interface; a public
	// address is assigned on the way to running and released on stop or
	// termination.
	if in.State != "terminated" {
		b.elem("privateIpAddress", l.privateIP.String())
	}
	if in.State == "running" && f.opts.InstancePublicIP.IsValid() {
		b.elem("ipAddress", f.opts.InstancePublicIP.String())
	}
	if l.clientToken != "" {
		b.elem("clientToken", l.clientToken)
	}
	b.open("metadataOptions")
	b.elem("state", "applied")
	b.elem("httpTokens", l.imds.httpTokens)
	b.elem("httpPutResponseHopLimit", strconv.Itoa(l.imds.hopLimit))
	b.elem("httpEndpoint", l.imds.httpEndpoint)
	b.close("metadataOptions")
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
	values := func(in *instance, filter string) []string {
		switch filter {
		case "instance-id":
			return []string{in.ID}
		case "instance-state-name":
			return []string{in.State}
		case "image-id":
			return []string{in.ImageID}
		case "subnet-id":
			return []string{in.SubnetID}
		case "client-token":
			return []string{f.launches[in.ID].clientToken}
		}
		return nil
	}
	// One reservation per RunInstances call, as EC2 reports them.
	byRes := map[string][]*instance{}
	for _, in := range described(q, f.instances, ids, values) {
		byRes[in.ReservationID] = append(byRes[in.ReservationID], in)
	}
	b.open("reservationSet")
	for _, res := range sortedKeys(byRes) {
		b.open("item")
		b.elem("reservationId", res)
		b.elem("ownerId", f.opts.AccountID)
		b.open("instancesSet")
		for i, in := range byRes[res] {
			f.writeInstance(b, in, i)
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
	// Latest: "This option is supported on instance types that use the
	// Nitro hypervisor." (The error code for the others is this fake's guess.)
	latest, e := q.bool("Latest")
	if e != nil {
		return e
	}
	if latest && !nitro(in.InstanceType) {
		return ec2Err("UnsupportedOperation", "The latest console output is not supported for the instance type %s.", in.InstanceType)
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
