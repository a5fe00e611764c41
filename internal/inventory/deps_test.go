package inventory

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps: the inventory keeps its records through the Store it declares; the store (bbolt) is
// never linked into it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/inventory", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged: []string{"github.com/imaged/imaged/internal/inventory", "github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/machines",
			"github.com/imaged/imaged/internal/agentapi"},
		Why: "the inventory declares its Store; cmd/imaged passes the store in",
	})
}
