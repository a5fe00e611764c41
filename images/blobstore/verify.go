package blobstore

import (
	"context"
	"fmt"
	"io"

	"github.com/imaged/imaged/images"
)

// Report is what Verify found.
type Report struct {
	Digest   images.Digest
	Size     int64 // bytes of the blob on disk
	WantSize int64 // bytes the manifest describes
	Blocks   int   // blocks checked
	// Corrupt lists, in order, the blocks whose bytes do not hash to the manifest's value
	// (blocks past the end of a short blob included).
	Corrupt []int
	// DigestOK is whether the blob's bytes hash to the image digest.
	DigestOK bool
}

// OK is whether the blob is exactly the image its manifest describes.
func (r *Report) OK() bool {
	return r.DigestOK && len(r.Corrupt) == 0 && r.Size == r.WantSize
}

// Verify re-reads an image's blob and checks every block against the manifest and the whole
// against the digest. A corrupt blob is a Report that is not OK, not an error; errors are for
// what kept Verify from checking (a missing image, an I/O error, ctx).
func (s *Store) Verify(ctx context.Context, d images.Digest) (*Report, error) {
	m, err := s.Manifest(d)
	if err != nil {
		return nil, err
	}
	f, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	rep := &Report{Digest: d, Size: st.Size(), WantSize: m.Size}
	// Read exactly the manifest's size: a long blob is caught by Size, a short one by its
	// missing blocks and the digest.
	fill := func(buf []byte, off int64) (int, error) {
		if off >= m.Size {
			return 0, io.EOF
		}
		want := int(min(int64(len(buf)), m.Size-off))
		n, err := f.ReadAt(buf[:want], off)
		if err != nil && err != io.EOF {
			return n, fmt.Errorf("blobstore: verify %s at offset %d: %w", d, off, err)
		}
		if n < len(buf) {
			return n, io.EOF
		}
		return n, nil
	}
	check := func(i int64, b []byte, h images.Hash, _ bool) error {
		rep.Blocks++
		if i >= int64(len(m.Blocks)) || int64(len(b)) != m.Len(int(i)) || h != m.Blocks[i].SHA256 {
			rep.Corrupt = append(rep.Corrupt, int(i))
		}
		return nil
	}
	got, size, err := hashImage(ctx, fill, check, nil, nil)
	if err != nil {
		return nil, err
	}
	// Blocks the blob is too short to hold at all.
	for i := images.NumBlocks(size); i < int64(len(m.Blocks)); i++ {
		rep.Corrupt = append(rep.Corrupt, int(i))
	}
	rep.DigestOK = got == m.Digest && size == m.Size
	return rep, nil
}
