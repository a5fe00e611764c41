package api

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps: the API serves the records of images and machines, and reaches the catalog, the
// blobs, the BMCs and the jobs through the interfaces it declares; the store (bbolt) is never
// linked into it, nor the AWS SDK or gofish.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/api", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
		Imaged: []string{"github.com/imaged/imaged/internal/api", "github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/machines",
			"github.com/imaged/imaged/internal/agentapi", "github.com/imaged/imaged/internal/inventory", "github.com/imaged/imaged/internal/jobs",
			"github.com/imaged/imaged/internal/power"},
		Why: "the API declares what it needs (ImageCatalog, Blobs, BMCs, Jobs); cmd/imaged passes the store and the rest in",
	})
}
