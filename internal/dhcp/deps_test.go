package dhcp

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the DHCP server a protocol leaf: it declares what it needs (Inventory, LeaseStore,
// Observer) and cmd/imaged adapts the store to them. No imaged package, nothing of storage or
// the cloud; Prometheus for its metrics.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/dhcp", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged:    []string{"github.com/imaged/imaged/internal/dhcp"},
		Why:       "a protocol leaf: no imaged package (declare a small interface here and adapt in cmd/imaged), no storage, cloud or BMC client",
	})
}
