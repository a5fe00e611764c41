package images

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the image artifact on the standard library alone: the agent carries it onto
// every blade, and every other package may import it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/images", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/images"},
		Modules: []string{},
		Why:     "it ships in the agent and sits below everything: the standard library only",
	})
}
