package routeradv

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the router advertiser a protocol leaf.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/routeradv", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish", "github.com/prometheus"},
		Imaged:    []string{"github.com/imaged/imaged/internal/routeradv"},
		Why:       "a protocol leaf: no imaged package, no storage, cloud or BMC client",
	})
}
