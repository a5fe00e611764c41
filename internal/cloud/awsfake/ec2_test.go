package awsfake_test

import (
	"bytes"
	"encoding/base64"
	"image/jpeg"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// completedSnapshot pushes and completes a snapshot with zero delay.
func completedSnapshot(t *testing.T, e *env) string {
	t.Helper()
	id, blocks := pushed(t, e)
	if err := complete(t, e, id, 3, linear(blocks...)); err != nil {
		t.Fatalf("CompleteSnapshot: %v", err)
	}
	return id
}

func registerInput(name, snap string) *ec2.RegisterImageInput {
	return &ec2.RegisterImageInput{
		Name:           aws.String(name),
		RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{
				SnapshotId:          aws.String(snap),
				VolumeType:          ec2types.VolumeTypeGp3,
				DeleteOnTermination: aws.Bool(true),
			},
		}},
	}
}

func register(t *testing.T, e *env, in *ec2.RegisterImageInput) string {
	t.Helper()
	out, err := e.ec2.RegisterImage(t.Context(), in)
	if err != nil {
		t.Fatalf("RegisterImage: %v", err)
	}
	return aws.ToString(out.ImageId)
}

func TestRegisterImageDefaults(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	snap := completedSnapshot(t, e)
	id := register(t, e, registerInput("bare", snap))
	im, _ := e.fake.Image(id)
	if im.Architecture != "i386" || im.VirtualizationType != "paravirtual" {
		t.Errorf("without Architecture/VirtualizationType: %s/%s, want AWS's defaults i386/paravirtual",
			im.Architecture, im.VirtualizationType)
	}
}

func TestRegisterImageRecordsAndDescribes(t *testing.T) {
	e := newEnv(t, awsfake.Options{ImageAvailableDelay: time.Minute})
	snap := completedSnapshot(t, e)
	in := registerInput("imaged-web@1.2.3", snap)
	in.Architecture = ec2types.ArchitectureValuesX8664
	in.VirtualizationType = aws.String("hvm")
	in.EnaSupport = aws.Bool(true)
	in.BootMode = ec2types.BootModeValuesUefi
	in.ImdsSupport = ec2types.ImdsSupportValuesV20
	in.TagSpecifications = []ec2types.TagSpecification{{
		ResourceType: ec2types.ResourceTypeImage,
		Tags:         []ec2types.Tag{{Key: aws.String("imaged:digest"), Value: aws.String("sha256:abc")}},
	}}
	id := register(t, e, in)

	im, _ := e.fake.Image(id)
	want := awsfake.BlockDeviceMapping{DeviceName: "/dev/xvda", SnapshotID: snap, VolumeSize: 1, VolumeType: "gp3", DeleteOnTermination: true}
	if im.Architecture != "x86_64" || im.VirtualizationType != "hvm" || !im.EnaSupport || im.BootMode != "uefi" ||
		im.ImdsSupport != "v2.0" || im.RootDeviceName != "/dev/xvda" || len(im.BlockDeviceMappings) != 1 ||
		im.BlockDeviceMappings[0] != want {
		t.Errorf("recorded image %+v", im)
	}

	describe := func() []ec2types.Image {
		out, err := e.ec2.DescribeImages(t.Context(), &ec2.DescribeImagesInput{
			Filters: []ec2types.Filter{{Name: aws.String("tag:imaged:digest"), Values: []string{"sha256:abc"}}},
		})
		if err != nil {
			t.Fatalf("DescribeImages: %v", err)
		}
		return out.Images
	}
	got := describe()
	if len(got) != 1 || aws.ToString(got[0].ImageId) != id || got[0].State != ec2types.ImageStatePending {
		t.Fatalf("DescribeImages by tag: %+v", got)
	}
	if got[0].Architecture != ec2types.ArchitectureValuesX8664 || aws.ToString(got[0].BlockDeviceMappings[0].Ebs.SnapshotId) != snap ||
		!aws.ToBool(got[0].EnaSupport) || got[0].ImdsSupport != ec2types.ImdsSupportValuesV20 {
		t.Errorf("DescribeImages attributes: %+v", got[0])
	}
	e.clock.Advance(time.Minute)
	if got := describe(); got[0].State != ec2types.ImageStateAvailable {
		t.Errorf("after the delay: %s, want available", got[0].State)
	}
	out, err := e.ec2.DescribeImages(t.Context(), &ec2.DescribeImagesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag:imaged:digest"), Values: []string{"sha256:other"}}},
	})
	if err != nil || len(out.Images) != 0 {
		t.Errorf("non-matching tag filter: %v %d images", err, len(out.Images))
	}

	_, err = e.ec2.RegisterImage(t.Context(), in)
	if code := apiCode(t, err); code != "InvalidAMIName.Duplicate" {
		t.Errorf("same name again: %s", code)
	}
	_, err = e.ec2.DescribeImages(t.Context(), &ec2.DescribeImagesInput{ImageIds: []string{"ami-0000000000000dead"}})
	if code := apiCode(t, err); code != "InvalidAMIID.NotFound" {
		t.Errorf("unknown image id: %s", code)
	}
}

func TestRegisterImageRefusesBadSnapshots(t *testing.T) {
	e := newEnv(t, awsfake.Options{SnapshotCompletionDelay: time.Hour})
	pending := startSnapshot(t, e, 1)
	for _, tt := range []struct {
		name, snap, code string
		mod              func(*ec2.RegisterImageInput)
	}{
		{"pending snapshot", pending, "IncorrectState", nil},
		{"unknown snapshot", "snap-00000000000000bad", "InvalidSnapshot.NotFound", nil},
		{"ENA on paravirtual", pending, "InvalidParameterCombination", func(in *ec2.RegisterImageInput) { in.EnaSupport = aws.Bool(true) }},
		{"IMDS v1", pending, "InvalidParameterValue", func(in *ec2.RegisterImageInput) { in.ImdsSupport = "v1.0" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := registerInput("img-"+tt.code, tt.snap)
			if tt.mod != nil {
				tt.mod(in)
			}
			_, err := e.ec2.RegisterImage(t.Context(), in)
			if code := apiCode(t, err); code != tt.code {
				t.Errorf("code %s, want %s", code, tt.code)
			}
		})
	}
	// A snapshot in another region does not exist here.
	other := e.ec2In("eu-west-1")
	_, err := other.RegisterImage(t.Context(), registerInput("elsewhere", pending))
	if code := apiCode(t, err); code != "InvalidSnapshot.NotFound" {
		t.Errorf("snapshot from another region: %s", code)
	}
}

func TestDeleteSnapshotInUse(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	snap := completedSnapshot(t, e)
	id := register(t, e, registerInput("in-use", snap))
	_, err := e.ec2.DeleteSnapshot(t.Context(), &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	if code := apiCode(t, err); code != "InvalidSnapshot.InUse" {
		t.Fatalf("DeleteSnapshot of a registered AMI's snapshot: %s, want InvalidSnapshot.InUse", code)
	}
	if _, err := e.ec2.DeregisterImage(t.Context(), &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
		t.Fatalf("DeregisterImage: %v", err)
	}
	if _, err := e.ec2.DeleteSnapshot(t.Context(), &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatalf("DeleteSnapshot after deregistration: %v", err)
	}
	if _, ok := e.fake.Snapshot(snap); ok {
		t.Error("snapshot still present")
	}
}

func TestCopyImageAndTags(t *testing.T) {
	e := newEnv(t, awsfake.Options{ImageAvailableDelay: time.Second})
	snap := completedSnapshot(t, e)
	in := registerInput("to-copy", snap)
	in.Architecture, in.VirtualizationType = ec2types.ArchitectureValuesX8664, aws.String("hvm")
	src := register(t, e, in)

	west := e.ec2In("us-west-2")
	copyIn := &ec2.CopyImageInput{SourceImageId: aws.String(src), SourceRegion: aws.String("us-east-1"), Name: aws.String("to-copy")}
	_, err := west.CopyImage(t.Context(), copyIn)
	if code := apiCode(t, err); code != "IncorrectState" {
		t.Fatalf("copy of a pending image: %s, want IncorrectState", code)
	}
	e.clock.Advance(time.Second)
	out, err := west.CopyImage(t.Context(), copyIn)
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	dst := aws.ToString(out.ImageId)
	if _, err := west.CreateTags(t.Context(), &ec2.CreateTagsInput{
		Resources: []string{dst}, Tags: []ec2types.Tag{{Key: aws.String("channel"), Value: aws.String("staging")}},
	}); err != nil {
		t.Fatalf("CreateTags: %v", err)
	}

	im, _ := e.fake.Image(dst)
	if im.Region != "us-west-2" || im.SourceImageID != src || im.Architecture != "x86_64" || im.Tags["channel"] != "staging" {
		t.Errorf("copy %+v", im)
	}
	if cs, _ := e.fake.Snapshot(im.BlockDeviceMappings[0].SnapshotID); cs.Region != "us-west-2" || cs.CopiedFrom != snap {
		t.Errorf("copied snapshot %+v", cs)
	}
	if n := len(e.fake.Images("us-east-1")); n != 1 {
		t.Errorf("us-east-1 has %d images, want 1", n)
	}
	// Each region sees only its own images.
	_, err = e.ec2.DescribeImages(t.Context(), &ec2.DescribeImagesInput{ImageIds: []string{dst}})
	if code := apiCode(t, err); code != "InvalidAMIID.NotFound" {
		t.Errorf("the copy seen from the source region: %s", code)
	}
}

func TestInstancesLifecycle(t *testing.T) {
	e := newEnv(t, awsfake.Options{
		ImageAvailableDelay:    time.Second,
		InstanceRunningDelay:   10 * time.Second,
		InstanceTerminateDelay: 5 * time.Second,
		ConsoleOutput:          "imaged: boot ok\n",
	})
	snap := completedSnapshot(t, e)
	in := registerInput("smoke", snap)
	in.Architecture, in.VirtualizationType = ec2types.ArchitectureValuesX8664, aws.String("hvm")
	in.EnaSupport = aws.Bool(true) // t3 requires it
	ami := register(t, e, in)
	run := &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String("subnet-0123"), SecurityGroupIds: []string{"sg-0123"},
	}
	_, err := e.ec2.RunInstances(t.Context(), run)
	if code := apiCode(t, err); code != "InvalidAMIID.Unavailable" {
		t.Fatalf("RunInstances on a pending AMI: %s", code)
	}
	e.clock.Advance(time.Second)
	out, err := e.ec2.RunInstances(t.Context(), run)
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	state := func() ec2types.InstanceStateName {
		out, err := e.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatalf("DescribeInstances: %v", err)
		}
		return out.Reservations[0].Instances[0].State.Name
	}
	if s := state(); s != ec2types.InstanceStateNamePending {
		t.Fatalf("state %s, want pending", s)
	}
	e.clock.Advance(10 * time.Second)
	if s := state(); s != ec2types.InstanceStateNameRunning {
		t.Fatalf("state %s, want running", s)
	}
	got := e.fake.Instances("us-east-1")[0]
	if got.SubnetID != "subnet-0123" || got.SecurityGroupIDs[0] != "sg-0123" || got.InstanceType != "t3.micro" {
		t.Errorf("recorded instance %+v", got)
	}

	co, err := e.ec2.GetConsoleOutput(t.Context(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetConsoleOutput: %v", err)
	}
	if text, _ := base64.StdEncoding.DecodeString(aws.ToString(co.Output)); string(text) != "imaged: boot ok\n" {
		t.Errorf("console output %q", text)
	}
	ss, err := e.ec2.GetConsoleScreenshot(t.Context(), &ec2.GetConsoleScreenshotInput{InstanceId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetConsoleScreenshot: %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(aws.ToString(ss.ImageData))
	if _, err := jpeg.Decode(bytes.NewReader(raw)); err != nil {
		t.Errorf("screenshot is not a JPEG: %v", err)
	}

	term, err := e.ec2.TerminateInstances(t.Context(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	if c := term.TerminatingInstances[0]; c.CurrentState.Name != ec2types.InstanceStateNameShuttingDown ||
		c.PreviousState.Name != ec2types.InstanceStateNameRunning {
		t.Errorf("TerminateInstances: %s → %s", c.PreviousState.Name, c.CurrentState.Name)
	}
	e.clock.Advance(5 * time.Second)
	if s := state(); s != ec2types.InstanceStateNameTerminated {
		t.Errorf("state %s, want terminated", s)
	}
	_, err = e.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0000000000000dead"}})
	if code := apiCode(t, err); code != "InvalidInstanceID.NotFound" {
		t.Errorf("unknown instance: %s", code)
	}
}

// hvmAMI registers an available x86_64 HVM AMI, with ENA and IMDSv2-only when asked.
func hvmAMI(t *testing.T, e *env, name string, ena, imdsV2 bool) string {
	t.Helper()
	in := registerInput(name, completedSnapshot(t, e))
	in.Architecture, in.VirtualizationType = ec2types.ArchitectureValuesX8664, aws.String("hvm")
	in.EnaSupport = aws.Bool(ena)
	if imdsV2 {
		in.ImdsSupport = ec2types.ImdsSupportValuesV20
	}
	return register(t, e, in)
}

func runOne(ami string, typ ec2types.InstanceType) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: typ, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
}

// Instances have a private address from launch until terminated and, when the subnet maps them,
// a public one while running.
func TestInstanceAddresses(t *testing.T) {
	e := newEnv(t, awsfake.Options{InstanceRunningDelay: 10 * time.Second, InstanceTerminateDelay: 5 * time.Second,
		InstancePublicIP: netip.MustParseAddr("203.0.113.7")})
	ami := hvmAMI(t, e, "addresses", true, false)
	run := runOne(ami, ec2types.InstanceTypeT3Micro)
	run.MaxCount = aws.Int32(2)
	out, err := e.ec2.RunInstances(t.Context(), run)
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	type addrs struct{ private, public string }
	got := func(in ec2types.Instance) addrs {
		return addrs{aws.ToString(in.PrivateIpAddress), aws.ToString(in.PublicIpAddress)}
	}
	// The first four addresses of a subnet are AWS's.
	want := []addrs{{"10.0.0.4", ""}, {"10.0.0.5", ""}}
	for i, in := range out.Instances {
		if got(in) != want[i] {
			t.Errorf("RunInstances: instance %d has %+v, want %+v", i, got(in), want[i])
		}
	}
	ids := []string{aws.ToString(out.Instances[0].InstanceId), aws.ToString(out.Instances[1].InstanceId)}
	describe := func() []ec2types.Instance {
		out, err := e.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil {
			t.Fatalf("DescribeInstances: %v", err)
		}
		return out.Reservations[0].Instances
	}
	e.clock.Advance(10 * time.Second)
	for i, in := range describe() {
		if w := (addrs{want[i].private, "203.0.113.7"}); got(in) != w {
			t.Errorf("running: instance %d has %+v, want %+v", i, got(in), w)
		}
	}
	if _, err := e.ec2.TerminateInstances(t.Context(), &ec2.TerminateInstancesInput{InstanceIds: ids[:1]}); err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	if in := describe()[0]; got(in) != (addrs{"10.0.0.4", ""}) {
		t.Errorf("shutting-down: %+v, want the private address only", got(in))
	}
	e.clock.Advance(5 * time.Second)
	if in := describe()[0]; got(in) != (addrs{}) {
		t.Errorf("terminated: %+v, want no address", got(in))
	}

	local := newEnv(t, awsfake.Options{InstancePrivateIP: netip.MustParseAddr("127.0.0.1")})
	out, err = local.ec2.RunInstances(t.Context(), runOne(hvmAMI(t, local, "local", true, false), ec2types.InstanceTypeT3Micro))
	if err != nil || aws.ToString(out.Instances[0].PrivateIpAddress) != "127.0.0.1" {
		t.Errorf("with InstancePrivateIP: %v, %v", err, out)
	}
}

// IMDS defaults to optional tokens, required (hop limit 2) for an AMI registered IMDSv2-only;
// what RunInstances asks for wins; invalid values are refused.
func TestRunInstancesMetadataOptions(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	plain, v2 := hvmAMI(t, e, "plain", true, false), hvmAMI(t, e, "imdsv2", true, true)
	for _, tt := range []struct {
		name, ami string
		opts      *ec2types.InstanceMetadataOptionsRequest
		tokens    ec2types.HttpTokensState
		hops      int32
		code      string
	}{
		{"default", plain, nil, ec2types.HttpTokensStateOptional, 1, ""},
		{"AMI v2.0", v2, nil, ec2types.HttpTokensStateRequired, 2, ""},
		{"required", plain, &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired}, ec2types.HttpTokensStateRequired, 1, ""},
		{"bad tokens", plain, &ec2types.InstanceMetadataOptionsRequest{HttpTokens: "sometimes"}, "", 0, "InvalidParameterValue"},
		{"bad endpoint", plain, &ec2types.InstanceMetadataOptionsRequest{HttpEndpoint: "on"}, "", 0, "InvalidParameterValue"},
		{"hop limit 65", plain, &ec2types.InstanceMetadataOptionsRequest{HttpPutResponseHopLimit: aws.Int32(65)}, "", 0, "InvalidParameterValue"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run := runOne(tt.ami, ec2types.InstanceTypeT3Micro)
			run.MetadataOptions = tt.opts
			out, err := e.ec2.RunInstances(t.Context(), run)
			if tt.code != "" {
				if code := apiCode(t, err); code != tt.code {
					t.Errorf("code %s, want %s", code, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("RunInstances: %v", err)
			}
			m := out.Instances[0].MetadataOptions
			if m == nil || m.HttpTokens != tt.tokens || aws.ToInt32(m.HttpPutResponseHopLimit) != tt.hops || m.HttpEndpoint != ec2types.InstanceMetadataEndpointStateEnabled {
				t.Errorf("metadata options %+v, want tokens %s, hop limit %d", m, tt.tokens, tt.hops)
			}
		})
	}
}

func TestRunInstancesRefuses(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	noENA := hvmAMI(t, e, "no-ena", false, false)
	_, err := e.ec2.RunInstances(t.Context(), runOne(noENA, ec2types.InstanceTypeT3Micro))
	if code := apiCode(t, err); code != "InvalidParameterCombination" {
		t.Errorf("an AMI without ENA on t3.micro: %s, want InvalidParameterCombination", code)
	}
	if _, err := e.ec2.RunInstances(t.Context(), runOne(noENA, ec2types.InstanceTypeT2Micro)); err != nil {
		t.Errorf("an AMI without ENA on t2.micro (Xen): %v", err)
	}
	run := runOne(noENA, ec2types.InstanceTypeT2Micro)
	run.InstanceInitiatedShutdownBehavior = "hibernate"
	_, err = e.ec2.RunInstances(t.Context(), run)
	if code := apiCode(t, err); code != "InvalidParameterValue" {
		t.Errorf("InstanceInitiatedShutdownBehavior hibernate: %s, want InvalidParameterValue", code)
	}
}

// A retried RunInstances with the same client token launches nothing more; one with other
// parameters is refused; the token finds the instance.
func TestRunInstancesClientToken(t *testing.T) {
	e := newEnv(t, awsfake.Options{})
	ami := hvmAMI(t, e, "token", true, false)
	launch := func(typ ec2types.InstanceType) (string, error) {
		run := runOne(ami, typ)
		run.ClientToken = aws.String("smoke-1")
		out, err := e.ec2.RunInstances(t.Context(), run)
		if err != nil {
			return "", err
		}
		if aws.ToString(out.Instances[0].ClientToken) != "smoke-1" {
			t.Errorf("clientToken %q", aws.ToString(out.Instances[0].ClientToken))
		}
		return aws.ToString(out.Instances[0].InstanceId), nil
	}
	first, err := launch(ec2types.InstanceTypeT3Micro)
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	again, err := launch(ec2types.InstanceTypeT3Micro)
	if err != nil || again != first || len(e.fake.Instances("")) != 1 {
		t.Errorf("retry: %s %v, %d instances; want %s and 1 instance", again, err, len(e.fake.Instances("")), first)
	}
	_, err = launch(ec2types.InstanceTypeT3Small)
	if code := apiCode(t, err); code != "IdempotentParameterMismatch" {
		t.Errorf("same token, other instance type: %s, want IdempotentParameterMismatch", code)
	}
	out, err := e.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("client-token"), Values: []string{"smoke-1"}}}})
	if err != nil || len(out.Reservations) != 1 || aws.ToString(out.Reservations[0].Instances[0].InstanceId) != first {
		t.Errorf("client-token filter: %v %+v", err, out)
	}
}

// GetConsoleOutput Latest is for Nitro instances only.
func TestConsoleOutputLatest(t *testing.T) {
	e := newEnv(t, awsfake.Options{ConsoleOutput: "login:"})
	ami := hvmAMI(t, e, "console", true, false)
	for _, tt := range []struct {
		typ    ec2types.InstanceType
		latest bool
		code   string
	}{
		{ec2types.InstanceTypeT3Micro, true, ""},
		{ec2types.InstanceTypeT2Micro, true, "UnsupportedOperation"},
		{ec2types.InstanceTypeT2Micro, false, ""},
	} {
		out, err := e.ec2.RunInstances(t.Context(), runOne(ami, tt.typ))
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		_, err = e.ec2.GetConsoleOutput(t.Context(), &ec2.GetConsoleOutputInput{InstanceId: out.Instances[0].InstanceId, Latest: aws.Bool(tt.latest)})
		if tt.code == "" && err != nil {
			t.Errorf("%s, latest %v: %v", tt.typ, tt.latest, err)
		}
		if tt.code != "" && apiCode(t, err) != tt.code {
			t.Errorf("%s, latest %v: %v, want %s", tt.typ, tt.latest, err, tt.code)
		}
	}
}
