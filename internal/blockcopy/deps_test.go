package blockcopy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps blockcopy a protocol leaf that can ship in the agent's initramfs: the standard
// library, golang.org/x/sys and the images package, nothing else.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("go list printed too little to trust: %q", out)
	}
	for _, d := range deps {
		switch {
		case d == "github.com/imaged/imaged/internal/blockcopy", d == "github.com/imaged/imaged/images":
		case strings.HasPrefix(d, "golang.org/x/sys/"):
		case strings.HasPrefix(d, "vendor/"), strings.HasPrefix(d, "internal/"):
		default:
			t.Errorf("blockcopy depends on %s: only std, golang.org/x/sys and images may ship in the agent", d)
		}
	}
}
