package awsfake_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/imaged/imaged/internal/cloud/awsfake"
)

func TestS3RoundTrip(t *testing.T) {
	e := newEnv(t, awsfake.Options{Buckets: []string{"imaged-amis"}})
	const doc = `{"imaged-web@1.2.3":{"us-east-1":"ami-0123"}}`
	if _, err := e.s3.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String("imaged-amis"), Key: aws.String("web/amis.json"),
		Body: strings.NewReader(doc), ContentType: aws.String("application/json"),
	}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	out, err := e.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("imaged-amis"), Key: aws.String("web/amis.json")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(got) != doc || aws.ToString(out.ContentType) != "application/json" {
		t.Errorf("GetObject: %q (%s)", got, aws.ToString(out.ContentType))
	}
	if o, ok := e.fake.Object("imaged-amis", "web/amis.json"); !ok || string(o.Data) != doc {
		t.Errorf("stored object %q", o.Data)
	}
	head, err := e.s3.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("imaged-amis"), Key: aws.String("web/amis.json")})
	if err != nil || aws.ToInt64(head.ContentLength) != int64(len(doc)) {
		t.Errorf("HeadObject: %v, length %d", err, aws.ToInt64(head.ContentLength))
	}

	_, err = e.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("imaged-amis"), Key: aws.String("nope")})
	var nsk *s3types.NoSuchKey
	if !errors.As(err, &nsk) {
		t.Errorf("missing key: %v, want NoSuchKey", err)
	}
	_, err = e.s3.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("imaged-amis"), Key: aws.String("nope")})
	if httpStatus(t, err) != 404 {
		t.Errorf("HeadObject of a missing key: %v", err)
	}
	_, err = e.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("other"), Key: aws.String("amis.json")})
	if code := apiCode(t, err); code != "NoSuchBucket" {
		t.Errorf("missing bucket: %s", code)
	}
}

// PutObject's conditional writes, as the S3 API Reference documents them: If-None-Match "*"
// creates only; If-Match overwrites only the object with that ETag (412 PreconditionFailed
// otherwise, 404 NoSuchKey when there is none). A refused write changes nothing.
func TestS3ConditionalWrites(t *testing.T) {
	e := newEnv(t, awsfake.Options{Buckets: []string{"imaged-amis"}})
	put := func(body string, cond func(*s3.PutObjectInput)) (*s3.PutObjectOutput, error) {
		in := &s3.PutObjectInput{Bucket: aws.String("imaged-amis"), Key: aws.String("amis.json"), Body: strings.NewReader(body)}
		cond(in)
		return e.s3.PutObject(t.Context(), in)
	}
	stored := func() string {
		o, _ := e.fake.Object("imaged-amis", "amis.json")
		return string(o.Data)
	}
	ifMatch := func(etag string) func(*s3.PutObjectInput) {
		return func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) }
	}
	create := func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") }

	if _, err := put("v0", ifMatch(`"0123456789abcdef0123456789abcdef"`)); apiCode(t, err) != "NoSuchKey" || httpStatus(t, err) != 404 {
		t.Errorf("If-Match on a missing key: %v", err)
	}
	first, err := put("v1", create)
	if err != nil || stored() != "v1" {
		t.Fatalf("If-None-Match * on a missing key: %v, stored %q", err, stored())
	}
	if _, err := put("v2", create); apiCode(t, err) != "PreconditionFailed" || httpStatus(t, err) != 412 || stored() != "v1" {
		t.Errorf("If-None-Match * on an existing key: %v, stored %q", err, stored())
	}
	second, err := put("v2", ifMatch(aws.ToString(first.ETag)))
	if err != nil || stored() != "v2" || aws.ToString(second.ETag) == aws.ToString(first.ETag) {
		t.Fatalf("If-Match with the current ETag: %v, stored %q", err, stored())
	}
	if _, err := put("v3", ifMatch(aws.ToString(first.ETag))); apiCode(t, err) != "PreconditionFailed" || httpStatus(t, err) != 412 || stored() != "v2" {
		t.Errorf("If-Match with a stale ETag: %v, stored %q", err, stored())
	}
	if _, err := put("v3", func(in *s3.PutObjectInput) { in.IfNoneMatch = second.ETag }); apiCode(t, err) != "NotImplemented" || stored() != "v2" {
		t.Errorf("If-None-Match with an ETag: %v", err)
	}
}
