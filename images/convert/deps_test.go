package convert

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the import sources below the catalog: S3 (the AWS SDK), the decompressors and
// images, nothing of the database, the BMC client or the metrics.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/images/convert", deptest.Rules{
		Forbidden: []string{"go.etcd.io/bbolt", "github.com/stmcginnis/gofish", "github.com/prometheus"},
		Imaged:    []string{"github.com/imaged/imaged/images/convert", "github.com/imaged/imaged/images"},
		Why:       "import sources: images and the formats' libraries, no imaged package above them, no storage or BMC client",
	})
}
