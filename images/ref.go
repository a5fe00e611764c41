package images

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadRef means a string is not NAME@VERSION (or NAME@CHANNEL).
var ErrBadRef = errors.New("not NAME@VERSION (letters, digits, . _ - +; at most 128 each)")

// Ref names catalog images: Name@Tag, where Tag is a version or a channel (a channel wins over a
// version of the same name), or one image by its Digest alone (then Name and Tag are empty).
// Its text is NAME@TAG, or the digest's.
type Ref struct {
	Name, Tag string
	Digest    Digest
}

func (r Ref) String() string {
	if !r.Digest.IsZero() {
		return r.Digest.String()
	}
	if r.Name == "" && r.Tag == "" {
		return ""
	}
	return r.Name + "@" + r.Tag
}

// ParseRef reads NAME@TAG (a version or a channel of an image name) and checks both parts.
func ParseRef(s string) (Ref, error) {
	name, tag, ok := strings.Cut(s, "@")
	if !ok || !refPart(name) || !refPart(tag) {
		return Ref{}, fmt.Errorf("%q: %w", s, ErrBadRef)
	}
	return Ref{Name: name, Tag: tag}, nil
}

// ParseRefOrDigest reads what names an image to an operator: NAME@VERSION, NAME@CHANNEL, or its
// digest (sha256:<hex>, or the 64 hex digits alone).
func ParseRefOrDigest(s string) (Ref, error) {
	if d, err := ParseDigest(s); err == nil {
		return Ref{Digest: d}, nil
	}
	r, err := ParseRef(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w; or sha256:<64 hex digits>", err)
	}
	return r, nil
}

func refPart(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+", r)) {
			return false
		}
	}
	return true
}
