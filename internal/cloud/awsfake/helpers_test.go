package awsfake_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

// env is a started Fake with SDK clients that never retry, so each test sees
// the first answer.
type env struct {
	fake  *awsfake.Fake
	clock *awsfake.Clock
	url   string
	ebs   *ebs.Client
	ec2   *ec2.Client
	s3    *s3.Client
}

func newEnv(t *testing.T, opts awsfake.Options) *env {
	t.Helper()
	c := awsfake.NewClock(time.Date(2026, 11, 4, 12, 0, 0, 0, time.UTC))
	if opts.Now == nil {
		opts.Now = c.Now
	}
	f := awsfake.New(opts)
	srv := f.Start(t)
	e := &env{fake: f, clock: c, url: srv.URL}
	cfg := e.config("us-east-1")
	e.ebs = ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	e.ec2 = e.ec2In("us-east-1")
	e.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.URL)
		o.UsePathStyle = true
	})
	return e
}

func (e *env) config(region string) aws.Config {
	return aws.Config{
		Region: region,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret"}, nil
		}),
		Retryer: func() aws.Retryer { return aws.NopRetryer{} },
	}
}

func (e *env) ec2In(region string) *ec2.Client {
	return ec2.NewFromConfig(e.config(region), func(o *ec2.Options) { o.BaseEndpoint = aws.String(e.url) })
}

// block returns a 512 KiB block filled with a pattern derived from seed.
func block(seed byte) []byte {
	b := make([]byte, awsfake.BlockSize)
	for i := range b {
		b[i] = seed + byte(i/4096)
	}
	return b
}

func sum64(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

// linear computes the LINEAR aggregate independently of the fake: SHA-256
// over the raw block digests in ascending index order (indexes given sorted).
func linear(blocks ...[]byte) string {
	h := sha256.New()
	for _, b := range blocks {
		s := sha256.Sum256(b)
		h.Write(s[:])
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func apiCode(t *testing.T, err error) string {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an API error", err)
	}
	return ae.ErrorCode()
}

func httpStatus(t *testing.T, err error) int {
	t.Helper()
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v carries no HTTP response", err)
	}
	return re.HTTPStatusCode()
}
