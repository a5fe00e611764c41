// Package convert turns an image source into the raw disk bytes of the image, produced once and
// in order so that the caller can hash and store them as they stream past (one pass).
//
// A source is a local path, an http(s) URL or s3://bucket/key. Its format is found by magic
// numbers, never by its name: raw, gzip, zstd or xz (each of which must wrap raw bytes: a
// compressed qcow2 or VHDX is refused as what it is, not guessed at), qcow2 (v2 and v3), VHD
// (fixed and dynamic) and VHDX (fixed and dynamic). Container formats are read through their
// allocation tables: unallocated clusters and blocks come out as zeros without reading anything,
// so they need random access — the file itself, ranged GETs over http(s), ranged GetObject on S3.
//
// A truncated or corrupt input is an error (wrapping ErrCorrupt) that names the offset, never a
// short image. Who may import this: the daemon and the CLI. It pulls in the AWS SDK, so the agent
// must not.
package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imaged/imaged/images"
)

// Format is what a source's bytes turned out to be.
type Format string

// The formats Open recognises.
const (
	Raw   Format = "raw"
	Gzip  Format = "gzip"  // raw bytes, gzip-compressed
	Zstd  Format = "zstd"  // raw bytes, zstd-compressed
	XZ    Format = "xz"    // raw bytes, xz-compressed
	Qcow2 Format = "qcow2" // QEMU copy-on-write v2 or v3
	VHD   Format = "vhd"   // Virtual PC / Hyper-V VHD, fixed or dynamic
	VHDX  Format = "vhdx"  // Hyper-V VHDX, fixed or dynamic
)

// Errors, matched with errors.Is. Messages carry the details (offsets, fields).
var (
	ErrNotFound    = errors.New("convert: source not found")
	ErrUnsupported = errors.New("convert: unsupported image") // encryption, backing files, differencing disks, …
	ErrCorrupt     = errors.New("convert: corrupt or truncated image")
	ErrNoRanges    = errors.New("convert: the server does not support range requests")
)

// Options configures where sources are fetched from. The zero value works for files and
// http(s) URLs, and for S3 with the SDK's default credential chain and region.
type Options struct {
	// HTTPClient fetches http(s) sources. Nil: a client with a one-minute response-header timeout
	// and no overall timeout (images are large).
	HTTPClient *http.Client
	// S3Endpoint overrides the S3 endpoint (e.g. "http://minio.lab:9000") for S3-compatible
	// stores; buckets are then addressed path-style.
	S3Endpoint string
	// S3Region overrides the region from the SDK's chain; "us-east-1" if neither has one.
	S3Region string
}

// Source is an opened image source. Raw yields its raw disk bytes; read them once.
type Source struct {
	Format Format
	// Detail describes the container for people ("v3, 64 KiB clusters, zlib", "dynamic, 2 MiB blocks").
	Detail string
	// Size is the raw image size in bytes, or -1 when only the end of the stream tells
	// (compressed inputs).
	Size int64
	// InputSize is the source's size in bytes, or -1 if the server did not say.
	InputSize int64

	raw      io.Reader
	closers  []io.Closer
	input    atomic.Int64 // bytes of input consumed (streamed formats)
	produced atomic.Int64 // raw bytes produced
	streamed bool
}

// Raw returns the reader of the image's raw bytes. It ends with io.EOF exactly at the end of the
// image; any other error (ErrCorrupt for a truncated input) means the image is not whole.
func (s *Source) Raw() io.Reader { return rawCounter{s} }

type rawCounter struct{ s *Source }

func (r rawCounter) Read(p []byte) (int, error) {
	n, err := r.s.raw.Read(p)
	r.s.produced.Add(int64(n))
	return n, err
}

// Progress reports how far the conversion is, in whichever unit has a known total: input bytes
// for streamed formats (whose raw size is unknown until the end), raw bytes for containers.
// total is -1 when unknown.
func (s *Source) Progress() (done, total int64) {
	if s.streamed {
		return s.input.Load(), s.InputSize
	}
	return s.produced.Load(), s.Size
}

// Close releases the source (files, HTTP bodies).
func (s *Source) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i].Close())
	}
	return errors.Join(errs...)
}

// headLen is how much of the start of a source format detection reads.
const headLen = 4096

// Open opens src and detects its format. ctx governs Open and every read from Raw (HTTP and S3
// requests are made with it).
func Open(ctx context.Context, src string, opt Options) (*Source, error) {
	be, err := openBackend(ctx, src, opt)
	if err != nil {
		return nil, err
	}
	s, err := open(be)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("%s: %w", be.name(), err)
	}
	return s, nil
}

func openBackend(ctx context.Context, src string, opt Options) (backend, error) {
	switch {
	case strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		return openHTTP(ctx, src, opt)
	case strings.HasPrefix(src, "s3://"):
		return openS3(ctx, src, opt)
	case strings.Contains(src, "://"):
		shown, _ := images.RedactSource(src)
		return nil, fmt.Errorf("convert: %q: unknown scheme (want a path, http(s):// or s3://)", shown)
	default:
		return openFile(src)
	}
}

// open detects the format of an opened backend and builds the raw reader.
func open(be backend) (*Source, error) {
	s := &Source{InputSize: be.size(), Size: -1, closers: []io.Closer{be}}
	ra := be.readerAt()
	var head, tail []byte
	var err error
	if ra != nil {
		if head, err = readHead(ra, be.size()); err != nil {
			return nil, err
		}
		if be.size() >= 2*vhdFooterLen {
			tail = make([]byte, vhdFooterLen)
			if _, err := ra.ReadAt(tail, be.size()-vhdFooterLen); err != nil {
				return nil, fmt.Errorf("convert: read the last %d bytes: %w", vhdFooterLen, err)
			}
		}
	} else if head, err = be.peek(headLen); err != nil {
		return nil, err
	}
	if what := refused(head); what != "" {
		return nil, fmt.Errorf("%w: the source is %s", ErrUnsupported, what)
	}
	s.Format = detect(head, tail)
	if claim := named(be.name()); s.Format == Raw && claim != "" {
		return nil, fmt.Errorf("%w: named like a %s image, but its %d bytes have no %s signature (truncated? not that format?)", ErrCorrupt, claim, be.size(), claim)
	}

	switch s.Format {
	case Raw, Gzip, Zstd, XZ:
		in, err := be.stream()
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, in)
		s.streamed = true
		counted := &inputCounter{r: in, n: &s.input}
		if s.Format == Raw {
			s.Size = be.size()
			var r io.Reader = counted
			if tail == nil { // the end was not read: make sure it is no fixed VHD's footer
				r = &tailGuard{r: counted, what: "raw stream", unranged: true}
			}
			s.raw = &exactReader{r: r, size: s.Size}
			return s, nil
		}
		dec, err := decompressor(s.Format, counted)
		if err != nil {
			return nil, fmt.Errorf("%w: %s header: %v", ErrCorrupt, s.Format, err)
		}
		s.closers = append(s.closers, dec)
		s.raw = &streamReader{format: s.Format, r: dec, input: &s.input}
		return s, nil
	}

	if ra == nil {
		return nil, fmt.Errorf("%w: a %s image needs random access", ErrNoRanges, s.Format)
	}
	var m mapper
	var detail string
	var size int64
	switch s.Format {
	case Qcow2:
		q, err := openQcow2(ra, be.size())
		if err != nil {
			return nil, err
		}
		m, size, detail = q, q.size, q.detail()
	case VHD:
		v, err := openVHD(ra, be.size())
		if err != nil {
			return nil, err
		}
		m, size, detail = v, v.size, v.detail()
	case VHDX:
		v, err := openVHDX(ra, be.size())
		if err != nil {
			return nil, err
		}
		m, size, detail = v, v.size, v.detail()
	}
	s.Size, s.Detail = size, detail
	s.raw = newExtentReader(s.Format, ra, m, size)
	return s, nil
}

func readHead(ra io.ReaderAt, size int64) ([]byte, error) {
	if size == 0 {
		return nil, fmt.Errorf("%w: the source is empty", ErrCorrupt)
	}
	head := make([]byte, min(size, headLen))
	if _, err := ra.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("convert: read the first %d bytes: %w", len(head), err)
	}
	return head, nil
}

// inputCounter counts the input bytes consumed, for Progress.
type inputCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (c *inputCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: t}
}
