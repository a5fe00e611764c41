package images

import (
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	d := Digest(sha256.Sum256([]byte("x")))
	for _, s := range []string{d.String(), d.Hex(), strings.ToUpper(d.Hex())} {
		if got, err := ParseDigest(s); err != nil || got != d {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "sha256:", "md5:" + d.Hex(), d.Hex()[:63] + "g", d.String() + "0", "sha256:" + strings.Repeat("0", 64)} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseHash(t *testing.T) {
	h := Hash(sha256.Sum256([]byte("x")))
	if got, err := ParseHash(h.String()); err != nil || got != h {
		t.Errorf("%s: %v", h, err)
	}
	for _, s := range []string{"", "sha256:" + h.String(), h.String()[:63], h.String()[:63] + "g", strings.Repeat("0", 64)} {
		if _, err := ParseHash(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// A record holding digests and hashes, as the state file and the API write them: the JSON is
// the text that a string field held before these types had text forms.
type record struct {
	Digest   Digest `json:"digest"`
	Manifest Hash   `json:"manifest_hash"`
	Assigned Digest `json:"assigned_image,omitzero"`
	Verified Hash   `json:"verified,omitzero"`
}

func TestDigestJSON(t *testing.T) {
	d := Digest(sha256.Sum256([]byte("x")))
	h := Hash(sha256.Sum256([]byte("y")))
	for _, tc := range []struct {
		rec  record
		want string
	}{
		{record{Digest: d, Manifest: h, Assigned: d, Verified: h},
			`{"digest":"sha256:` + d.Hex() + `","manifest_hash":"` + h.String() + `","assigned_image":"sha256:` + d.Hex() + `","verified":"` + h.String() + `"}`},
		// The zero values mean none: an empty string where the field is always written, no field
		// where it is omitzero (as omitempty left out an empty string).
		{record{}, `{"digest":"","manifest_hash":""}`},
	} {
		b, err := json.Marshal(tc.rec)
		if err != nil || string(b) != tc.want {
			t.Errorf("marshal %+v: %s, %v; want %s", tc.rec, b, err, tc.want)
		}
		var back record
		if err := json.Unmarshal(b, &back); err != nil || back != tc.rec {
			t.Errorf("unmarshal %s: %+v, %v", b, back, err)
		}
	}
	// A bare hex digest reads as the digest (ParseDigest), and writes back with its prefix.
	var r record
	if err := json.Unmarshal([]byte(`{"digest":"`+d.Hex()+`"}`), &r); err != nil || r.Digest != d {
		t.Errorf("bare hex: %+v, %v", r, err)
	}
	for _, bad := range []string{`{"digest":"sha256:12"}`, `{"manifest_hash":"sha256:` + h.String() + `"}`, `{"digest":1}`, `{"assigned_image":"sha256:` + strings.Repeat("0", 64) + `"}`} {
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestDigestText(t *testing.T) {
	if s := (Digest{}).String() + (Hash{}).String(); s != "" {
		t.Errorf("zero values print %q, want nothing", s)
	}
	d := Digest(sha256.Sum256([]byte("x")))
	var back Digest
	if b, _ := d.MarshalText(); back.UnmarshalText(b) != nil || back != d || string(b) != d.String() {
		t.Errorf("%s does not round-trip: %s", d, b)
	}
	if err := back.UnmarshalText(nil); err != nil || !back.IsZero() {
		t.Errorf("empty text: %v, %s", err, back)
	}
}
