package main

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps guards what every blade loads: the whole program is the agent's packages and
// nothing of the server or the lab (internal/agent's TestAgentDeps guards the package; this
// guards the binary, main included).
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/cmd/imaged-agent", deptest.Rules{
		Forbidden: append([]string{"github.com/imaged/imaged/internal/lab"}, deptest.ServerModules...),
		Imaged: []string{"github.com/imaged/imaged/cmd/imaged-agent", "github.com/imaged/imaged/internal/agent",
			"github.com/imaged/imaged/internal/agentapi", "github.com/imaged/imaged/internal/blockcopy",
			"github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/version",
			"github.com/imaged/imaged/internal/atomicfile"},
		Why: "it is the initramfs's /init on every blade: the agent and the leaves it needs, never the server's packages or modules, nor the lab",
	})
}
