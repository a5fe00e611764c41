package labos

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestOSImageDeps holds the builder and the contract to the agent's rules: osinit imports this
// package, so it ships in the initramfs too. And it must not import the agent (nor osinit):
// internal/lab builds images with it, internal/lab/netns imports internal/lab, and the agent's own
// tests import internal/lab/netns, so that would be an import cycle.
func TestLabOSDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/lab/labos", deptest.Rules{
		Forbidden: deptest.ServerModules,
		Imaged: []string{"github.com/imaged/imaged/internal/lab/labos", "github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/initrd",
			"github.com/imaged/imaged/internal/atomicfile"},
		Why: "it must stay a leaf (images, initrd) that may ship in the initramfs, below the agent and the lab",
	})
}
