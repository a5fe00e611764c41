package cloud

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// sdkEnv gives the SDK's default chain static credentials and region (none when ""), and
// nothing else from the machine running the test.
func sdkEnv(t *testing.T, region string) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": region,
		"AWS_DEFAULT_REGION": "", "AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
}

// An Env works in its home region and the other ones, each once, through the endpoint given,
// with the SDK's credentials; it finds an AMI imaged published by name and version, the newest
// when there are several.
func TestEnv(t *testing.T) {
	sdkEnv(t, "eu-west-1")
	ce := newChannelEnv(t)
	_, v1 := ce.publish(t, "labos", "1", "us-east-1")
	_, v2 := ce.publish(t, "labos", "2", "us-east-1", "eu-west-1")
	// A second AMI of labos@2 in us-east-1, an hour newer (the fake's clock moved on).
	out, err := ce.clients["us-east-1"].CopyImage(t.Context(), &ec2.CopyImageInput{Name: aws.String("labos-2-again"),
		SourceImageId: aws.String(v2["us-east-1"]), SourceRegion: aws.String("us-east-1"), CopyImageTags: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	newest := aws.ToString(out.ImageId)
	e, err := NewEnv(t.Context(), EnvConfig{Region: "us-east-1", Endpoint: ce.url, Connections: 8,
		CopyTo: []string{"eu-west-1", "us-east-1", "eu-west-1"}, Contract: "s3://imaged-amis/imaged/amis.json"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Region != "us-east-1" || !slices.Equal(e.CopyTo, []string{"eu-west-1"}) || len(e.Regions()) != 2 || len(e.Copies()) != 1 {
		t.Errorf("regions: home %s, copies %v, %d clients", e.Region, e.CopyTo, len(e.Regions()))
	}
	ctx := t.Context()
	if ami, err := e.FindAMI(ctx, "labos", "1"); err != nil || ami != v1["us-east-1"] {
		t.Errorf("labos@1: %s, %v; want %s", ami, err, v1["us-east-1"])
	}
	if ami, err := e.FindAMI(ctx, "labos", "2"); err != nil || ami != newest {
		t.Errorf("labos@2: %s, %v; want the newest, %s (the older is %s)", ami, err, newest, v2["us-east-1"])
	}
	if _, err := e.FindAMI(ctx, "labos", "3"); err == nil || !strings.Contains(err.Error(), "no available AMI of labos@3 in us-east-1") {
		t.Errorf("labos@3: %v", err)
	}
	all, err := List(ctx, e.Regions(), "labos")
	if err != nil || len(all) != 4 {
		t.Errorf("List through the Env's clients: %d AMIs, %v; want 4", len(all), err)
	}
	if doc, _, err := e.Contract.Load(ctx); err != nil || len(doc.Images) != 0 || e.Contract.String() != "s3://imaged-amis/imaged/amis.json" {
		t.Errorf("the contract %s: %v", e.Contract, err)
	}
}

// Without a region in the config or the SDK's sources, NewEnv says so; the home region comes
// from the SDK's when the config gives none.
func TestNewEnvRegion(t *testing.T) {
	sdkEnv(t, "")
	if _, err := NewEnv(t.Context(), EnvConfig{}); !errors.Is(err, ErrNoRegion) {
		t.Errorf("no region: %v", err)
	}
	sdkEnv(t, "ap-southeast-2")
	if e, err := NewEnv(t.Context(), EnvConfig{}); err != nil || e.Region != "ap-southeast-2" || e.Contract.S3 != nil {
		t.Errorf("the SDK's region: %v", err)
	}
}

func TestParseContractURL(t *testing.T) {
	if b, k, err := ParseContractURL("s3://imaged-amis/prod/amis.json"); err != nil || b != "imaged-amis" || k != "prod/amis.json" {
		t.Errorf("s3://imaged-amis/prod/amis.json: %q %q %v", b, k, err)
	}
	for _, u := range []string{"", "s3://", "s3://bucket", "s3://bucket/", "s3:///amis.json", "https://bucket/amis.json", "bucket/amis.json"} {
		if _, _, err := ParseContractURL(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	if _, err := NewEnv(t.Context(), EnvConfig{Region: "us-east-1", Contract: "s3://bucket"}); err == nil {
		t.Error("NewEnv accepted a contract without a key")
	}
}
