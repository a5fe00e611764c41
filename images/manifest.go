// Package images is the image artifact, one format for bare metal and for EC2: a raw disk image
// identified by the SHA-256 of its bytes (the digest), described by a block manifest of fixed
// 512 KiB blocks (the EBS direct API's block size), each with its SHA-256 and an all-zero flag.
//
// The manifest has one canonical binary encoding (MarshalBinary); its SHA-256 is the manifest
// hash. The agent, the HTTP server and the EC2 publisher all read this one format.
//
// It also holds what the catalog says about images (catalog.go: Image, Channel and the errors of
// the catalog's rules) and how they are named (ref.go: NAME@VERSION, NAME@CHANNEL or a digest):
// the values the store keeps and the API, the jobs and the CLI pass around. Digest, Hash and Ref
// read and write their text forms, so that JSON, the state file and the logs hold the text.
//
// The package must stay importable by the agent: it depends on the standard library only.
package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// BlockSize is the manifest's block size: 512 KiB, the EBS direct API's block size, so that the
// same block digests are the x-amz-Checksum values when the image is uploaded to a snapshot.
const BlockSize = 512 << 10

// ManifestVersion is the canonical encoding this package writes and reads.
const ManifestVersion = 1

// MaxImageSize bounds what a manifest may describe (16 TiB; 32 Mi blocks), so that a hostile
// manifest cannot make a reader allocate without limit.
const MaxImageSize = 16 << 40

// Block is one 512 KiB block of the image (the last may be shorter).
type Block struct {
	SHA256 Hash // of the block's bytes as they are in the image
	Zero   bool // every byte is zero: never sent, written only where the target is not known zero
}

// Manifest describes an image block by block.
type Manifest struct {
	Size   int64  // bytes of the raw image
	Digest Digest // SHA-256 of all Size bytes
	Blocks []Block
}

// NumBlocks is how many blocks an image of size bytes has.
func NumBlocks(size int64) int64 { return (size + BlockSize - 1) / BlockSize }

// BlockLen is the length of block i of an image of size bytes.
func BlockLen(size int64, i int64) int64 {
	if rem := size - i*BlockSize; rem < BlockSize {
		return rem
	}
	return BlockSize
}

// ZeroHash returns the SHA-256 of n zero bytes (n ≤ BlockSize), the hash every zero block has.
func ZeroHash(n int64) Hash {
	if n == BlockSize {
		return zeroBlockHash
	}
	return sha256.Sum256(make([]byte, n))
}

var zeroBlockHash = sha256.Sum256(make([]byte, BlockSize))

// Offset is where block i starts.
func (m *Manifest) Offset(i int) int64 { return int64(i) * BlockSize }

// Len is the length of block i.
func (m *Manifest) Len(i int) int64 { return BlockLen(m.Size, int64(i)) }

// NonZero counts the blocks that carry data.
func (m *Manifest) NonZero() (blocks int, bytes int64) {
	for i, b := range m.Blocks {
		if !b.Zero {
			blocks++
			bytes += m.Len(i)
		}
	}
	return blocks, bytes
}

// Validate checks that the manifest is consistent: the block count matches the size, and every
// zero block has the hash of zeros.
func (m *Manifest) Validate() error {
	if m.Size <= 0 || m.Size > MaxImageSize {
		return fmt.Errorf("images: manifest size %d is out of range (1 byte to 16 TiB)", m.Size)
	}
	if int64(len(m.Blocks)) != NumBlocks(m.Size) {
		return fmt.Errorf("images: manifest has %d blocks, a %d-byte image has %d", len(m.Blocks), m.Size, NumBlocks(m.Size))
	}
	for i, b := range m.Blocks {
		if b.Zero && b.SHA256 != ZeroHash(m.Len(i)) {
			return fmt.Errorf("images: manifest block %d is marked zero but its hash is not the hash of zeros", i)
		}
	}
	return nil
}

// The canonical encoding, all integers big-endian:
//
//	magic    "IMGMNFST" (8 bytes)
//	version  uint32 = 1
//	blocksz  uint32 = 524288
//	size     uint64
//	digest   [32]byte
//	nblocks  uint64
//	blocks   nblocks × { flags uint8 (bit 0: zero; other bits 0), sha256 [32]byte }
//
// There is exactly one encoding of a manifest, so its SHA-256 (the manifest hash) identifies it.
var magic = [8]byte{'I', 'M', 'G', 'M', 'N', 'F', 'S', 'T'}

const headerLen = 8 + 4 + 4 + 8 + 32 + 8
const blockRecLen = 1 + 32

// ErrManifest is wrapped by every decoding error.
var ErrManifest = errors.New("images: invalid manifest")

// MarshalBinary returns the canonical encoding.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, headerLen+len(m.Blocks)*blockRecLen)
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint32(b, ManifestVersion)
	b = binary.BigEndian.AppendUint32(b, BlockSize)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = append(b, m.Digest[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(m.Blocks)))
	for _, blk := range m.Blocks {
		var f byte
		if blk.Zero {
			f = 1
		}
		b = append(b, f)
		b = append(b, blk.SHA256[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes the canonical encoding and validates it. Anything else (another
// version, trailing bytes, unknown flags) is refused, so a manifest has one encoding only.
func (m *Manifest) UnmarshalBinary(b []byte) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, args...))
	}
	if len(b) < headerLen {
		return fail("%d bytes is shorter than the %d-byte header", len(b), headerLen)
	}
	if !bytes.Equal(b[:8], magic[:]) {
		return fail("bad magic %q", b[:8])
	}
	if v := binary.BigEndian.Uint32(b[8:]); v != ManifestVersion {
		return fail("version %d, this imaged reads version %d", v, ManifestVersion)
	}
	if bs := binary.BigEndian.Uint32(b[12:]); bs != BlockSize {
		return fail("block size %d, want %d", bs, BlockSize)
	}
	size := binary.BigEndian.Uint64(b[16:])
	if size == 0 || size > MaxImageSize {
		return fail("image size %d is out of range", size)
	}
	var out Manifest
	out.Size = int64(size)
	copy(out.Digest[:], b[24:56])
	n := binary.BigEndian.Uint64(b[56:])
	if n != uint64(NumBlocks(out.Size)) {
		return fail("%d blocks for a %d-byte image (want %d)", n, size, NumBlocks(out.Size))
	}
	if uint64(len(b)-headerLen) != n*blockRecLen {
		return fail("%d bytes of block records, want %d", len(b)-headerLen, n*blockRecLen)
	}
	out.Blocks = make([]Block, n)
	for i := range out.Blocks {
		r := b[headerLen+i*blockRecLen:]
		if r[0]&^1 != 0 {
			return fail("block %d has unknown flags %#x", i, r[0])
		}
		out.Blocks[i].Zero = r[0] == 1
		copy(out.Blocks[i].SHA256[:], r[1:33])
	}
	if err := out.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrManifest, err)
	}
	*m = out
	return nil
}

// Hash is the manifest hash: the SHA-256 of the canonical encoding.
func (m *Manifest) Hash() (Hash, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return Hash{}, err
	}
	return sha256.Sum256(b), nil
}
