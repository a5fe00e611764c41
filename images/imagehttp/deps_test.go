package imagehttp

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the image server a leaf on the standard library: it serves what an Images
// interface gives it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/images/imagehttp", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/images/imagehttp", "github.com/imaged/imaged/images"},
		Modules: []string{},
		Why:     "a protocol leaf on the standard library and images only",
	})
}
