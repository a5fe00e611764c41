package redfish

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the Redfish client a leaf below the power layer: it implements internal/power's
// interface and imports nothing else of imaged, nothing of storage or the cloud.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/redfish", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/"},
		Imaged:    []string{"github.com/imaged/imaged/internal/redfish", "github.com/imaged/imaged/internal/power"},
		Why:       "the BMC client may know the power interface it implements, nothing else of imaged; no storage or cloud",
	})
}
