package images

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	for s, want := range map[string]Ref{
		"debian@12":            {Name: "debian", Tag: "12"},
		"win10@production":     {Name: "win10", Tag: "production"},
		"a.b_c-d+e@1.2.3-rc+1": {Name: "a.b_c-d+e", Tag: "1.2.3-rc+1"},
	} {
		r, err := ParseRef(s)
		if err != nil || r != want || r.String() != s {
			t.Errorf("ParseRef(%q) = %+v %v", s, r, err)
		}
	}
	d := Digest(sha256.Sum256([]byte("x")))
	for _, s := range []string{"", "debian", "@12", "debian@", "deb ian@12", "debian@1@2", "debian@" + strings.Repeat("1", 129), d.String(), d.Hex()} {
		if r, err := ParseRef(s); !errors.Is(err, ErrBadRef) {
			t.Errorf("ParseRef(%q) = %+v %v, want ErrBadRef", s, r, err)
		}
	}
}

func TestParseRefOrDigest(t *testing.T) {
	d := Digest(sha256.Sum256([]byte("x")))
	for s, want := range map[string]Ref{
		"debian@stable": {Name: "debian", Tag: "stable"},
		d.String():      {Digest: d},
		d.Hex():         {Digest: d},
	} {
		if r, err := ParseRefOrDigest(s); err != nil || r != want {
			t.Errorf("ParseRefOrDigest(%q) = %+v %v", s, r, err)
		}
	}
	if r, _ := ParseRefOrDigest(d.Hex()); r.String() != d.String() {
		t.Errorf("a digest ref's text is the digest's: %s", r)
	}
	for _, s := range []string{"", "debian", "sha256:12", "md5:" + d.Hex(), "sha256:" + strings.Repeat("0", 64)} {
		if _, err := ParseRefOrDigest(s); !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), "sha256:<64 hex digits>") {
			t.Errorf("ParseRefOrDigest(%q): %v", s, err)
		}
	}
	if (Ref{}).String() != "" {
		t.Error("the zero Ref has text")
	}
}
