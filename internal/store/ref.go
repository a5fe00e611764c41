package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadRef means a string is not NAME@VERSION (or NAME@CHANNEL).
var ErrBadRef = errors.New("not NAME@VERSION (letters, digits, . _ - +; at most 128 each)")

// SplitRef splits "name@version" (or "name@channel") and checks both parts.
func SplitRef(ref string) (name, tag string, err error) {
	name, tag, ok := strings.Cut(ref, "@")
	if !ok || !refPart(name) || !refPart(tag) {
		return "", "", fmt.Errorf("%q: %w", ref, ErrBadRef)
	}
	return name, tag, nil
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
