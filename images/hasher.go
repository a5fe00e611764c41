package images

import (
	"crypto/sha256"
	"hash"
)

// Builder computes a manifest from an image's bytes written to it in order, in one pass: the
// image digest, and each block's SHA-256 and zero flag. It is an io.Writer.
type Builder struct {
	digest hash.Hash
	buf    []byte
	size   int64
	blocks []Block
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{digest: sha256.New(), buf: make([]byte, 0, BlockSize)}
}

// Write adds image bytes.
func (b *Builder) Write(p []byte) (int, error) {
	n := len(p)
	b.digest.Write(p)
	b.size += int64(n)
	for len(p) > 0 {
		k := min(BlockSize-len(b.buf), len(p))
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
		if len(b.buf) == BlockSize {
			b.flush()
		}
	}
	return n, nil
}

func (b *Builder) flush() {
	b.blocks = append(b.blocks, Block{SHA256: sha256.Sum256(b.buf), Zero: IsZero(b.buf)})
	b.buf = b.buf[:0]
}

// Manifest finishes the image and returns its manifest.
func (b *Builder) Manifest() (*Manifest, error) {
	if len(b.buf) > 0 {
		b.flush()
	}
	m := &Manifest{Size: b.size, Blocks: b.blocks}
	copy(m.Digest[:], b.digest.Sum(nil))
	return m, m.Validate()
}

// IsZero reports whether every byte of p is zero.
func IsZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}
