package deptest

import "testing"

// TestServicesDoNotLinkTheStore: jobs, the inventory, the catalog and the API see the store only
// through the interfaces they declare (jobs.Store, inventory.Store, catalog.Store), in terms of the
// records of images and machines; cmd/imaged passes the store in. bbolt, the AWS SDK and gofish
// are never linked into them, and each imports only the imaged packages named here (power, for
// the BMC types of jobs.Power and the API's BMC routes).
func TestServicesDoNotLinkTheStore(t *testing.T) {
	const m = "github.com/imaged/imaged/"
	records := []string{m + "images", m + "internal/machines", m + "internal/agentapi"}
	for pkg, more := range map[string][]string{
		"internal/jobs":      {m + "internal/power"},
		"internal/inventory": nil,
		"internal/catalog":   nil,
		"internal/api":       {m + "internal/inventory", m + "internal/jobs", m + "internal/power", m + "internal/catalog"},
	} {
		Check(t, m+pkg, Rules{
			Forbidden: []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"},
			Imaged:    append(append([]string{m + pkg}, records...), more...),
			Why:       "it declares what it needs of the store; cmd/imaged passes the store in",
		})
	}
}
