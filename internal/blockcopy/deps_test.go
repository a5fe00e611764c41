package blockcopy

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps blockcopy a protocol leaf that can ship in the agent's initramfs: the standard
// library, golang.org/x/sys and the images package, nothing else.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/blockcopy", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/internal/blockcopy", "github.com/imaged/imaged/images"},
		Modules: []string{"golang.org/x/sys/", "vendor/", "internal/"},
		Why:     "only std, golang.org/x/sys and images may ship in the agent",
	})
}
