package fleet

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the fleet below the application: it drives BMCs through the power drivers and
// knows nothing of the store, the inventory, the jobs or the API, which call it.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/power/fleet", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/"},
		Imaged: []string{"github.com/imaged/imaged/internal/power/fleet", "github.com/imaged/imaged/internal/power",
			"github.com/imaged/imaged/internal/redfish"},
		Why: "the fleet is the power layer: the application imports it, never the other way",
	})
}
