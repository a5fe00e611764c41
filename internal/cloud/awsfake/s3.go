package awsfake

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// S3 objects, path style: /bucket/key. Errors are
// <Error><Code>…</Code><Message>…</Message></Error> (S3 API Reference,
// "Error responses").

type s3Error struct {
	status int
	code   string
	msg    string
	bucket string
	key    string
	// condition names the header whose precondition failed (PreconditionFailed).
	condition string
}

func writeS3Error(w http.ResponseWriter, r *http.Request, e *s3Error) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.status)
	// A HEAD response has no body; the SDK maps the status code.
	if r.Method == http.MethodHead {
		return
	}
	var b xb
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.open("Error")
	b.elem("Code", e.code)
	b.elem("Message", e.msg)
	if e.bucket != "" {
		b.elem("BucketName", e.bucket)
	}
	if e.key != "" {
		b.elem("Key", e.key)
	}
	if e.condition != "" {
		b.elem("Condition", e.condition)
	}
	b.elem("RequestId", requestID())
	b.close("Error")
	w.Write([]byte(b.String()))
}

func s3Fault(ft *Fault) *s3Error {
	switch ft.Kind {
	case FaultThrottle, FaultThrottling429:
		return &s3Error{status: http.StatusServiceUnavailable, code: "SlowDown", msg: "Please reduce your request rate."}
	case FaultUnavailable:
		return &s3Error{status: http.StatusServiceUnavailable, code: "ServiceUnavailable", msg: "Service is unable to handle request."}
	default:
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."}
	}
}

func (f *Fake) serveS3(w http.ResponseWriter, r *http.Request) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var op string
	switch {
	case r.Method == http.MethodPut && key == "":
		op = "CreateBucket"
	case r.Method == http.MethodPut:
		op = "PutObject"
	case r.Method == http.MethodGet && key != "":
		op = "GetObject"
	case r.Method == http.MethodHead && key != "":
		op = "HeadObject"
	default:
		writeS3Error(w, r, &s3Error{status: http.StatusNotImplemented, code: "NotImplemented",
			msg: "awsfake implements only CreateBucket, PutObject, GetObject and HeadObject"})
		return
	}
	var body []byte
	if op == "PutObject" {
		var err error
		if body, err = readS3Body(r); err != nil {
			writeS3Error(w, r, &s3Error{status: http.StatusBadRequest, code: "IncompleteBody", msg: err.Error()})
			return
		}
	}
	now, ft := f.begin(op)
	defer f.mu.Unlock()
	if ft != nil {
		writeS3Error(w, r, s3Fault(ft))
		return
	}
	if op == "CreateBucket" {
		if f.buckets[bucket] == nil {
			f.buckets[bucket] = map[string]*Object{}
		}
		w.Header().Set("Location", "/"+bucket)
		return
	}
	objs, ok := f.buckets[bucket]
	if !ok {
		writeS3Error(w, r, &s3Error{status: http.StatusNotFound, code: "NoSuchBucket",
			msg: "The specified bucket does not exist", bucket: bucket})
		return
	}
	if op == "PutObject" {
		if e := putPrecondition(r, objs[key], key); e != nil {
			writeS3Error(w, r, e)
			return
		}
		sum := md5.Sum(body)
		o := &Object{
			Data:         body,
			ContentType:  r.Header.Get("Content-Type"),
			ETag:         `"` + hex.EncodeToString(sum[:]) + `"`,
			Metadata:     map[string]string{},
			LastModified: now,
		}
		for k, v := range r.Header {
			if m, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok {
				o.Metadata[m] = v[0]
			}
		}
		objs[key] = o
		w.Header().Set("ETag", o.ETag)
		return
	}
	o, ok := objs[key]
	if !ok {
		writeS3Error(w, r, &s3Error{status: http.StatusNotFound, code: "NoSuchKey",
			msg: "The specified key does not exist.", key: key})
		return
	}
	h := w.Header()
	h.Set("ETag", o.ETag)
	h.Set("Content-Length", strconv.Itoa(len(o.Data)))
	h.Set("Last-Modified", o.LastModified.UTC().Format(http.TimeFormat))
	if o.ContentType != "" {
		h.Set("Content-Type", o.ContentType)
	}
	for k, v := range o.Metadata {
		h.Set("X-Amz-Meta-"+k, v)
	}
	if op == "GetObject" {
		w.Write(o.Data)
	}
}

// putPrecondition checks PutObject's conditional-write headers against the
// current object (nil when the key does not exist). Checked under f.mu, so
// concurrent conditional writes of one key are serialized and the loser sees
// 412 (S3 may also answer 409 ConditionalRequestConflict while another write
// is in flight; this fake never has one in flight).
func putPrecondition(r *http.Request, cur *Object, key string) *s3Error {
	// If-None-Match: "Uploads the object only if the object key name does
	// not already exist in the bucket specified. Otherwise, Amazon S3 returns
	// a 412 Precondition Failed error. … Expects the '*' (asterisk)
	// character." (PutObject, S3 API Reference.)
	if v := r.Header.Get("If-None-Match"); v != "" {
		if v != "*" {
			return &s3Error{status: http.StatusNotImplemented, code: "NotImplemented",
				msg: "A header you provided implies functionality that is not implemented: If-None-Match other than *"}
		}
		if cur != nil {
			return &s3Error{status: http.StatusPreconditionFailed, code: "PreconditionFailed",
				msg: "At least one of the pre-conditions you specified did not hold", condition: "If-None-Match"}
		}
	}
	// If-Match: "Uploads the object only if the ETag (entity tag) value
	// provided during the WRITE operation matches the ETag of the object in
	// S3. If the ETag values do not match, the operation returns a 412
	// Precondition Failed error." With no object under the key, the user
	// guide's conditional-write behavior is 404 Not Found (NoSuchKey).
	if v := r.Header.Get("If-Match"); v != "" {
		if cur == nil {
			return &s3Error{status: http.StatusNotFound, code: "NoSuchKey",
				msg: "The specified key does not exist.", key: key}
		}
		if v != "*" && strings.Trim(v, `"`) != strings.Trim(cur.ETag, `"`) {
			return &s3Error{status: http.StatusPreconditionFailed, code: "PreconditionFailed",
				msg: "At least one of the pre-conditions you specified did not hold", condition: "If-Match"}
		}
	}
	return nil
}

// readS3Body reads a PutObject body, decoding aws-chunked encoding (used by
// the SDK for trailing checksums) when the request declares it.
func readS3Body(r *http.Request) ([]byte, error) {
	if !strings.Contains(r.Header.Get("Content-Encoding"), "aws-chunked") &&
		!strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		return io.ReadAll(r.Body)
	}
	br := bufio.NewReader(r.Body)
	var out bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("aws-chunked: chunk header: %w", err)
		}
		sizeHex, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(sizeHex, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("aws-chunked: chunk size %q: %w", sizeHex, err)
		}
		if n == 0 {
			return out.Bytes(), nil // trailers follow; they are not checked
		}
		if _, err := io.CopyN(&out, br, n); err != nil {
			return nil, fmt.Errorf("aws-chunked: chunk data: %w", err)
		}
		if _, err := br.Discard(2); err != nil { // CRLF
			return nil, fmt.Errorf("aws-chunked: chunk end: %w", err)
		}
	}
}
