package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ErrNoRegion means neither EnvConfig nor the SDK's sources ($AWS_REGION, ~/.aws/config) name a
// region.
var ErrNoRegion = errors.New("cloud: no AWS region")

// EnvConfig is where the EC2 work happens. Zero values take the SDK's defaults.
type EnvConfig struct {
	// Region is the region pushed to; "" takes the SDK's ($AWS_REGION, ~/.aws/config).
	Region string
	// Endpoint is an EC2/EBS/S3-compatible endpoint instead of AWS's (private clouds, tests).
	Endpoint string
	// CopyTo are the other regions AMIs are copied into and channels cover; the home region
	// and repeats are dropped.
	CopyTo []string
	// Contract is the published amis.json, s3://bucket/key, or "" for none.
	Contract string
	// Connections is how many requests may be in flight at once (the push workers): the HTTP
	// client keeps that many idle connections per host.
	Connections int
}

// Env is the AWS side of imaged's EC2 work: the SDK's configuration, with its default credential
// chain (environment, shared files, SSO, instance roles), the home region, the regions copied
// into, the contract and a client per region. It is safe for concurrent use.
type Env struct {
	Region   string   // the home region: pushed to, smoke-tested in
	CopyTo   []string // the other regions
	Contract Contract // S3 is nil without a contract

	aws      aws.Config
	endpoint string
	mu       sync.Mutex
	ec2s     map[string]*ec2.Client
}

// NewEnv loads the SDK's configuration and builds the contract's S3 client. It calls no AWS
// API: a missing credential shows at the first call.
func NewEnv(ctx context.Context, c EnvConfig) (*Env, error) {
	e := &Env{endpoint: c.Endpoint, ec2s: map[string]*ec2.Client{}}
	var lo []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		lo = append(lo, awsconfig.WithRegion(c.Region))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("cloud: AWS config: %w", err)
	}
	if ac.Region == "" {
		return nil, ErrNoRegion
	}
	// The SDK's own client (its dial and TLS timeouts, the environment's proxy), with enough idle
	// connections for every push worker to keep its own.
	if n := c.Connections; n > 0 {
		ac.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost, tr.MaxIdleConns = n, 2*n
		})
	}
	e.aws, e.Region = ac, ac.Region
	for _, r := range c.CopyTo {
		if r != e.Region && !slices.Contains(e.CopyTo, r) {
			e.CopyTo = append(e.CopyTo, r)
		}
	}
	if c.Contract != "" {
		b, k, err := ParseContractURL(c.Contract)
		if err != nil {
			return nil, err
		}
		e.Contract = Contract{S3: s3.NewFromConfig(ac, func(o *s3.Options) {
			// amis.json is checked by parsing it; an S3-compatible store that keeps no checksums
			// (or one written before S3 kept them) is no reason for a log line on every read.
			o.DisableLogOutputChecksumValidationSkipped = true
			if e.endpoint != "" {
				o.BaseEndpoint, o.UsePathStyle = aws.String(e.endpoint), true
			}
		}), Bucket: b, Key: k}
	}
	return e, nil
}

// ParseContractURL splits the contract's s3://bucket/key.
func ParseContractURL(u string) (bucket, key string, err error) {
	b, k, ok := strings.Cut(strings.TrimPrefix(u, "s3://"), "/")
	if !strings.HasPrefix(u, "s3://") || !ok || b == "" || k == "" {
		return "", "", fmt.Errorf("cloud: %q is not an S3 object URL like s3://my-bucket/amis.json", u)
	}
	return b, k, nil
}

// EC2 is the EC2 client of one region.
func (e *Env) EC2(region string) *ec2.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.ec2s[region]; ok {
		return c
	}
	c := ec2.NewFromConfig(e.aws, func(o *ec2.Options) {
		o.Region = region
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	})
	e.ec2s[region] = c
	return c
}

// EBS is the EBS direct API client of the home region, for PushSnapshot.
func (e *Env) EBS() *ebs.Client {
	return ebs.NewFromConfig(e.aws, func(o *ebs.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
		o.RetryMaxAttempts = 1 // PushSnapshot retries each block itself, with its own backoff
	})
}

// Regions are the home region and the ones copied into, for Promote, Rollback, Prune and List.
func (e *Env) Regions() map[string]ImagesEC2 {
	m := map[string]ImagesEC2{e.Region: e.EC2(e.Region)}
	for _, r := range e.CopyTo {
		m[r] = e.EC2(r)
	}
	return m
}

// Copies are the regions copied into, for PublishOptions.CopyTo.
func (e *Env) Copies() []RegionClient {
	var out []RegionClient
	for _, r := range e.CopyTo {
		out = append(out, RegionClient{Region: r, EC2: e.EC2(r)})
	}
	return out
}

// FindAMI is the newest available AMI of name@version that imaged published in the home region
// (found by its tags).
func (e *Env) FindAMI(ctx context.Context, name, version string) (string, error) {
	found, err := listImages(ctx, e.EC2(e.Region), filter("tag:"+TagName, name), filter("tag:"+TagVersion, version),
		filter("state", "available"))
	if err != nil {
		return "", fmt.Errorf("cloud: look for %s@%s in %s: %w", name, version, e.Region, err)
	}
	if len(found) == 0 {
		return "", fmt.Errorf("cloud: no available AMI of %s@%s in %s (push it first)", name, version, e.Region)
	}
	return aws.ToString(found[0].ImageId), nil
}
