package images

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Hash is a SHA-256, written as 64 hex digits (a block's hash, the manifest hash). The zero Hash
// means none: its text is empty (a JSON field that may lack one is tagged omitzero).
type Hash [sha256.Size]byte

func (h Hash) String() string {
	if h.IsZero() {
		return ""
	}
	return hex.EncodeToString(h[:])
}

// IsZero reports whether h is the zero Hash, which means none.
func (h Hash) IsZero() bool { return h == Hash{} }

// Base64 is the form EBS's PutSnapshotBlock wants in x-amz-Checksum.
func (h Hash) Base64() string { return base64.StdEncoding.EncodeToString(h[:]) }

// MarshalText is the hex form (empty for the zero Hash): how JSON, the state file and the logs
// write a Hash.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads what MarshalText writes: 64 hex digits, or nothing for the zero Hash.
func (h *Hash) UnmarshalText(b []byte) error { return unmarshalText(h, b, ParseHash) }

// ParseHash reads 64 hex digits. All zeros is refused: that is the zero Hash, which means none.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("images: %q is not a SHA-256 (64 hex digits)", s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("images: %q is not a SHA-256: %w", s, err)
	}
	if h.IsZero() {
		return h, fmt.Errorf("images: %q is all zeros, which names nothing", s)
	}
	return h, nil
}

// Digest is an image's identity: the SHA-256 of its raw bytes, written "sha256:<hex>". The zero
// Digest means none (no image assigned, none verified): its text is empty, and a JSON field that
// may lack one is tagged omitzero.
type Digest Hash

func (d Digest) String() string {
	if d.IsZero() {
		return ""
	}
	return "sha256:" + hex.EncodeToString(d[:])
}

// IsZero reports whether d is the zero Digest, which means none.
func (d Digest) IsZero() bool { return d == Digest{} }

// Hex is the digest without its algorithm prefix (used in blob paths and URLs).
func (d Digest) Hex() string { return hex.EncodeToString(d[:]) }

// MarshalText is "sha256:<hex>" (empty for the zero Digest): how JSON, the state file and the
// logs write a Digest.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads what ParseDigest reads, or nothing for the zero Digest.
func (d *Digest) UnmarshalText(b []byte) error { return unmarshalText(d, b, ParseDigest) }

// unmarshalText sets *v to what parse reads in text, or to the zero value (none) for no text.
func unmarshalText[T any](v *T, text []byte, parse func(string) (T, error)) error {
	var x T
	if len(text) > 0 {
		var err error
		if x, err = parse(string(text)); err != nil {
			return err
		}
	}
	*v = x
	return nil
}

// ParseDigest accepts "sha256:<64 hex>" or the 64 hex digits alone. It is the one place a
// digest's text is read: API bodies, command lines and stored records come through it. All
// zeros is refused: that is the zero Digest, which means none.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 {
		return d, fmt.Errorf("images: %q is not a SHA-256 digest (sha256: and 64 hex digits)", s)
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("images: %q is not a SHA-256 digest: %w", s, err)
	}
	if d.IsZero() {
		return d, fmt.Errorf("images: %q is all zeros, which names no image", s)
	}
	return d, nil
}
