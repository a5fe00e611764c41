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
