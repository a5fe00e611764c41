package osinit

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestOSInitDeps holds the os mode to the agent's rules: it is the /init of the lab's images,
// which boot on the lab's blades as the agent's initramfs does, so none of the server's heavy
// dependencies and no imaged server package may creep in.
func TestOSInitDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/lab/labos/osinit", deptest.Rules{
		Forbidden: deptest.ServerModules,
		Imaged: []string{"github.com/imaged/imaged/internal/lab/labos/osinit", "github.com/imaged/imaged/internal/lab/labos",
			"github.com/imaged/imaged/internal/agent", "github.com/imaged/imaged/internal/version", "github.com/imaged/imaged/images",
			"github.com/imaged/imaged/internal/blockcopy", "github.com/imaged/imaged/internal/agentapi", "github.com/imaged/imaged/internal/initrd",
			"github.com/imaged/imaged/internal/atomicfile"},
		Why: "it ships in the initramfs; only leaf packages safe on blades may be added here, server packages never",
	})
}
