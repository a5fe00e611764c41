package osimage

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOSImageDeps holds the builder and the contract to the agent's rules (internal/agent's
// TestAgentDeps): osinit imports this package, so it ships in the initramfs too. And it must not
// import the agent (nor osinit): internal/lab builds images with it, internal/testnet imports
// internal/lab, and the agent's own tests import internal/testnet, so that would be an import
// cycle.
func TestOSImageDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/imaged/imaged/internal/osimage").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"go.etcd.io/bbolt",
		"github.com/aws/",
		"github.com/stmcginnis/gofish",
		"github.com/prometheus",
	}
	allowedImaged := map[string]bool{
		"github.com/imaged/imaged/internal/osimage": true, "github.com/imaged/imaged/images": true,
		"github.com/imaged/imaged/internal/initrd": true,
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list printed too little to trust: %q", out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("osimage depends on %s, which must not ship in the initramfs", d)
			}
		}
		if strings.HasPrefix(d, "github.com/imaged/imaged/") && !allowedImaged[d] {
			t.Errorf("osimage depends on %s: it must stay a leaf (images, initrd), below the agent and the lab", d)
		}
	}
}
