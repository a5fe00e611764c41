package atomicfile

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps atomicfile on the standard library alone: the agent, the BMC emulator and the
// blob store use it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/atomicfile", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/internal/atomicfile"},
		Modules: []string{},
		Why:     "it must use the standard library only",
	})
}
