package osinit

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOSInitDeps holds the os mode to the agent's rules (internal/agent's TestAgentDeps): it is
// part of the same /init on every blade, so none of the server's heavy dependencies and no imaged
// server package may creep in. internal/osimage (the contract, and the builder with its
// internal/initrd) is allowed: it is a leaf with no server dependency (TestOSImageDeps).
func TestOSInitDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/imaged/imaged/internal/osimage/osinit").CombinedOutput()
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
		"github.com/imaged/imaged/internal/osimage/osinit": true, "github.com/imaged/imaged/internal/osimage": true,
		"github.com/imaged/imaged/internal/agent":   true,
		"github.com/imaged/imaged/internal/version": true, "github.com/imaged/imaged/images": true,
		"github.com/imaged/imaged/internal/blockcopy": true, "github.com/imaged/imaged/internal/agentapi": true,
		"github.com/imaged/imaged/internal/initrd": true,
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list printed too little to trust: %q", out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("osinit depends on %s, which must not ship in the initramfs", d)
			}
		}
		if strings.HasPrefix(d, "github.com/imaged/imaged/") && !allowedImaged[d] {
			t.Errorf("osinit depends on %s: only leaf packages that are safe to ship on blades may be added here; server packages never", d)
		}
	}
}
