package blobstore

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the blob store below the catalog: files on disk, nothing of the database, the
// API or the cloud.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/images/blobstore", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/images/blobstore", "github.com/imaged/imaged/images", "github.com/imaged/imaged/internal/atomicfile"},
		Modules: []string{"golang.org/x/sys/", "golang.org/x/sync/"},
		Why:     "the store of bytes: images, atomicfile and golang.org/x/sys and x/sync only",
	})
}
