package vbmc

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the emulator an independent implementation of the Redfish spec on the
// standard library alone: if it shared code with imaged's Redfish client (internal/redfish,
// gofish), the client's tests against it would check the client against itself.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list printed too little to trust: %q", out)
	}
	for _, d := range deps {
		if d != "github.com/imaged/imaged/internal/vbmc" {
			t.Errorf("vbmc depends on %s: it must use the standard library only", d)
		}
	}
}
