package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/imaged/imaged/images"
)

// s3Backend reads s3://bucket/key with HeadObject and ranged GetObject.
type s3Backend struct {
	ctx         context.Context
	client      *s3.Client
	bucket, key string
	n           int64
	etag        *string // If-Match on every GetObject: an object replaced mid-import fails
	ra          *rangeReaderAt
}

func openS3(ctx context.Context, src string, opt Options) (*s3Backend, error) {
	shown, _ := images.RedactSource(src)
	u, err := url.Parse(src)
	if err != nil || u.Host == "" || len(u.Path) < 2 {
		return nil, fmt.Errorf("convert: %q: want s3://bucket/key", shown)
	}
	b := &s3Backend{ctx: ctx, bucket: u.Host, key: strings.TrimPrefix(u.Path, "/")}
	// The SDK's default chain: environment, shared config and credentials files, SSO, web
	// identity, ECS and EC2 instance roles.
	var lo []func(*config.LoadOptions) error
	if opt.S3Region != "" {
		lo = append(lo, config.WithRegion(opt.S3Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("convert: AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	b.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opt.S3Endpoint != "" {
			// S3-compatible stores (MinIO, Ceph RGW, …) are addressed path-style:
			// http://endpoint/bucket/key.
			o.BaseEndpoint = aws.String(opt.S3Endpoint)
			o.UsePathStyle = true
		}
		// Ranged GETs carry no whole-object checksum; the image digest is the check.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &b.key})
	if err != nil {
		return nil, b.err("HeadObject", err)
	}
	if head.ContentLength == nil {
		return nil, fmt.Errorf("convert: %s: HeadObject gave no Content-Length", b.name())
	}
	b.n, b.etag = *head.ContentLength, head.ETag
	b.ra = &rangeReaderAt{ctx: ctx, r: b, size: b.n}
	return b, nil
}

func (b *s3Backend) err(op string, err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var api smithy.APIError
	switch {
	case errors.As(err, &nsk), errors.As(err, &nf):
		return fmt.Errorf("%w: %s s3://%s/%s: %w", ErrNotFound, op, b.bucket, b.key, err)
	case errors.As(err, &api) && (api.ErrorCode() == "NoSuchBucket" || api.ErrorCode() == "NotFound"):
		return fmt.Errorf("%w: %s s3://%s/%s: %w", ErrNotFound, op, b.bucket, b.key, err)
	case errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed":
		return fmt.Errorf("%w: s3://%s/%s changed while being read: %w", ErrCorrupt, b.bucket, b.key, err)
	}
	return fmt.Errorf("convert: %s s3://%s/%s: %w", op, b.bucket, b.key, err)
}

func (b *s3Backend) get(ctx context.Context, rng *string) (*s3.GetObjectOutput, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &b.key, Range: rng, IfMatch: b.etag})
	if err != nil {
		return nil, b.err("GetObject", err)
	}
	return out, nil
}

// openRange reads n bytes at off. The answer must say it holds them (Content-Range, RFC 9110
// §14.4): a store, or a proxy before it, that ignores Range answers 200 with the object from
// its first byte, which read as the bytes at off would make another image.
func (b *s3Backend) openRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	out, err := b.get(ctx, aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)))
	if err != nil {
		return nil, err
	}
	cr := aws.ToString(out.ContentRange)
	if start, _, err := contentRange(cr); err != nil || start != off {
		out.Body.Close()
		return nil, fmt.Errorf("convert: GetObject %s bytes %d-%d: answered Content-Range %q (does the store, or a proxy before it, ignore Range?)", b.name(), off, off+n-1, cr)
	}
	return out.Body, nil
}

func (b *s3Backend) name() string             { return "s3://" + b.bucket + "/" + b.key }
func (b *s3Backend) size() int64              { return b.n }
func (b *s3Backend) readerAt() io.ReaderAt    { return b.ra }
func (b *s3Backend) peek(int) ([]byte, error) { return nil, errors.New("peek on S3") }
func (b *s3Backend) stream() (io.ReadCloser, error) {
	out, err := b.get(b.ctx, nil)
	if err != nil {
		return nil, err
	}
	return out.Body, nil
}
func (b *s3Backend) Close() error { return nil }
