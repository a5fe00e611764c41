package jobs

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps: jobs sees the store, the BMCs and the inventory only through the interfaces it
// declares (Store, Power, Catalog, Prober), in terms of its own types and those of images,
// machines and power; bbolt, the AWS SDK and gofish are never linked into it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/jobs", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged: []string{"github.com/imaged/imaged/internal/jobs", "github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/machines",
			"github.com/imaged/imaged/internal/agentapi", "github.com/imaged/imaged/internal/power"},
		Why: "jobs declares what it needs of the store and the BMCs; cmd/imaged passes them in",
	})
}
