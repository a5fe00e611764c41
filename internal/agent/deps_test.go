package agent

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestAgentDeps guards the initramfs: the agent's dependency set ships on every blade, so none
// of the server's heavy dependencies and no imaged server package may creep in.
func TestAgentDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/agent", deptest.Rules{
		Forbidden: deptest.ServerModules,
		Imaged: []string{"github.com/imaged/imaged/internal/agent", "github.com/imaged/imaged/internal/version",
			"github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/blockcopy", "github.com/imaged/imaged/internal/agentapi",
			"github.com/imaged/imaged/internal/atomicfile"},
		Why: "it ships in the initramfs; only leaf packages safe on blades may be added here, server packages never",
	})
}
