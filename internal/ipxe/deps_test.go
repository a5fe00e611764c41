package ipxe

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the iPXE script package a protocol leaf: it renders scripts and serves assets
// from what cmd/imaged tells it (machines, tokens), and asks through its own small interfaces.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/ipxe", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged:    []string{"github.com/imaged/imaged/internal/ipxe"},
		Why:       "a protocol leaf: no imaged package (declare a small interface here and adapt in cmd/imaged), no storage, cloud or BMC client",
	})
}
