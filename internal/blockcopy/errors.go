package blockcopy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/imaged/imaged/images"
)

// Sentinels, matched with errors.Is. The typed errors below wrap them.
var (
	// ErrChecksum: a block's SHA-256 is not the manifest's (*ChecksumError says which block).
	ErrChecksum = errors.New("blockcopy: checksum mismatch")
	// ErrShortSource: the source delivered fewer bytes than asked (a truncated body, a
	// Content-Length lie, or a blob shorter than its manifest).
	ErrShortSource = errors.New("blockcopy: short source")
	// ErrSourceChanged: the blob no longer has the ETag the copy started with (HTTP 412 on
	// If-Match), so its bytes cannot be mixed with those already written.
	ErrSourceChanged = errors.New("blockcopy: source changed during the copy")
	// ErrTargetTooSmall: the target cannot hold the image.
	ErrTargetTooSmall = errors.New("blockcopy: target too small")
)

// ChecksumError is a block whose bytes do not hash to the manifest's SHA-256: as fetched from
// the source (after its retries), or as read back from the target (OnTarget).
type ChecksumError struct {
	Block    int64 // block index; the block starts at Block × images.BlockSize
	Want     images.Hash
	Got      images.Hash
	OnTarget bool // found by read-back verification of the target, not on arrival
	Attempts int  // fetches of the block, all refused (0 for read-back)
}

func (e *ChecksumError) Error() string {
	where := fmt.Sprintf("from the source (%d attempts)", e.Attempts)
	if e.OnTarget {
		where = "read back from the target"
	}
	return fmt.Sprintf("blockcopy: checksum mismatch in block %d (offset %d) %s: sha256 %s, manifest says %s",
		e.Block, e.Block*images.BlockSize, where, e.Got, e.Want)
}

func (e *ChecksumError) Is(target error) bool { return target == ErrChecksum }

// ServerError is an HTTP answer other than 206 Partial Content to a ranged GET. 5xx, 408 and
// 429 are retried; other statuses are final. Unwrap gives ErrSourceChanged for 412 and
// ErrShortSource for 416 (the range starts past the blob's end).
type ServerError struct {
	Status int
	URL    string
	Range  string // the Range header sent
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("blockcopy: GET %s (Range: %s): server answered %d %s", e.URL, e.Range, e.Status, http.StatusText(e.Status))
}

func (e *ServerError) Unwrap() error {
	switch e.Status {
	case http.StatusPreconditionFailed:
		return ErrSourceChanged
	case http.StatusRequestedRangeNotSatisfiable:
		return ErrShortSource
	}
	return nil
}

func (e *ServerError) temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests
}

// permanentError marks a source error that retrying cannot cure (the blob is shorter than the
// manifest, the server answered a different range).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that Copy does not retry it. Sources use it for answers that another
// attempt cannot change.
func Permanent(err error) error { return permanentError{err} }

// retryable tells whether a source error is worth another attempt at the same block.
func retryable(err error) bool {
	var p permanentError
	if errors.As(err, &p) || errors.Is(err, ErrSourceChanged) {
		return false
	}
	// A certificate the client does not trust stays untrusted on the next connection.
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return false
	}
	var se *ServerError
	if errors.As(err, &se) {
		return se.temporary()
	}
	// Network errors, resets, truncated bodies, stalls: another connection may do better.
	return true
}
