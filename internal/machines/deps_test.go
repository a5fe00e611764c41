package machines

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps: the machine records are values anything may import (the agent's side included): the
// standard library and images, nothing else.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/machines", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/internal/machines", "github.com/imaged/imaged/images"},
		Modules: []string{"vendor/", "internal/"},
		Why:     "records are values: std and images only",
	})
}
