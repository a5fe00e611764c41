package web

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// The vendored files are the very ones static/VERSIONS names: a change to either without the
// other fails here.
func TestVendoredVersions(t *testing.T) {
	table, err := files.ReadFile("static/VERSIONS")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[0], ".js") {
			continue
		}
		b, err := files.ReadFile("static/" + f[0])
		if err != nil {
			t.Errorf("%s: %v", f[0], err)
			continue
		}
		sum := sha256.Sum256(b)
		if got, want := hex.EncodeToString(sum[:]), f[len(f)-1]; got != want {
			t.Errorf("%s: SHA-256 %s, VERSIONS says %s", f[0], got, want)
		}
		if _, err := files.ReadFile("static/" + strings.TrimSuffix(strings.TrimSuffix(f[0], ".min.js"), ".js") + ".LICENSE"); err != nil {
			t.Errorf("%s: no licence beside it: %v", f[0], err)
		}
		seen++
	}
	if seen != 2 {
		t.Errorf("VERSIONS lists %d vendored files, want 2 (htmx and its SSE extension)", seen)
	}
	htmx, _ := files.ReadFile("static/htmx.min.js")
	if !strings.Contains(string(htmx), `version:"2.0.11"`) {
		t.Errorf("htmx.min.js is not htmx 2.0.11")
	}
}
