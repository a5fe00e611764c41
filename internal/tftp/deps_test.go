package tftp

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the TFTP server a protocol leaf: files come from a directory or the handler
// cmd/imaged gives it; it knows nothing of jobs, machines or storage.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/tftp", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged:    []string{"github.com/imaged/imaged/internal/tftp"},
		Why:       "a protocol leaf: no imaged package (declare a small interface here and adapt in cmd/imaged), no storage, cloud or BMC client",
	})
}
