package blockcopy

import (
	"fmt"
	"testing"
)

// parseContentRange reads a header from the network: it must never panic, and what it accepts
// must be what it says.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-524287/2147483648", "bytes 5-4/10", "bytes */10", "bytes -1--2/3", "", "bytes 1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, err := parseContentRange(s)
		if err != nil {
			return
		}
		a, b, err2 := parseContentRange(fmt.Sprintf("bytes %d-%d/*", first, last))
		if err2 != nil || a != first || b != last {
			t.Errorf("%q parsed as %d-%d, which does not round-trip", s, first, last)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last int64
		ok          bool
	}{
		{"bytes 0-524287/2147483648", 0, 524287, true},
		{"bytes 524288-4718591/*", 524288, 4718591, true},
		{"bytes */2147483648", 0, 0, false},
		{"bytes 1-2", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"bytes x-2/3", 0, 0, false},
	} {
		first, last, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || first != tc.first || last != tc.last {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tc.in, first, last, err)
		}
	}
}
