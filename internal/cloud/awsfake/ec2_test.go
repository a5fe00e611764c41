package awsfake_test

import (
	"bytes"
	"encoding/base64"
	"image/jpeg"
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
