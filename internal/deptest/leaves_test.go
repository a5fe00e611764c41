package deptest

import "testing"

// TestLeaves is the lower edge of the package graph on one page: the protocol leaves, the image
// packages and atomicfile, what each may import of imaged besides itself, and which modules it
// must never link. No arrow goes from a leaf back to the application: a leaf that needs
// something of it declares a small interface on its own side, and cmd/imaged adapts. (The
// agent's side, the BMC emulator and the lab OS keep their rules in their own deps_test.go.)
func TestLeaves(t *testing.T) {
	const m = "github.com/imaged/imaged/"
	server := []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish"}
	stdOnly := []string{}
	for _, l := range []struct {
		pkg       string
		imaged    []string // imaged packages it may import besides itself
		forbidden []string
		modules   []string // nil: any module not forbidden; empty: the standard library only
		why       string
	}{
		{"internal/dhcp", nil, server, nil, "a protocol leaf: it asks an Inventory, a LeaseStore and an Observer, which cmd/imaged adapts; Prometheus for its metrics"},
		{"internal/tftp", nil, server, nil, "a protocol leaf: files come from a directory or the handler cmd/imaged gives it"},
		{"internal/ipxe", nil, server, nil, "a protocol leaf: it renders scripts and serves assets from what cmd/imaged tells it"},
		{"internal/routeradv", nil, append(server, "github.com/prometheus"), nil, "a protocol leaf"},
		{"internal/redfish", []string{"internal/power"}, []string{"go.etcd.io/bbolt", "github.com/aws/"}, nil,
			"the BMC client knows the power interface it implements and nothing else of imaged"},
		{"images", nil, nil, stdOnly, "the image artifact: the agent carries it onto every blade and every package may import it"},
		{"images/imagehttp", []string{"images"}, nil, stdOnly, "a protocol leaf: it serves what its Images interface gives it"},
		{"images/blobstore", []string{"images", "internal/atomicfile"}, nil, []string{"golang.org/x/sys/", "golang.org/x/sync/"},
			"the bytes on disk, below the catalog: nothing of the database, the API or the cloud"},
		{"images/convert", []string{"images"}, []string{"go.etcd.io/bbolt", "github.com/stmcginnis/gofish", "github.com/prometheus"}, nil,
			"import sources: images and the formats' libraries (the AWS SDK for S3), below the catalog"},
		{"internal/atomicfile", nil, nil, stdOnly, "the agent, the BMC emulator and the blob store use it"},
	} {
		t.Run(l.pkg, func(t *testing.T) {
			imaged := []string{m + l.pkg}
			for _, p := range l.imaged {
				imaged = append(imaged, m+p)
			}
			Check(t, m+l.pkg, Rules{Forbidden: l.forbidden, Imaged: imaged, Modules: l.modules, Why: l.why})
		})
	}
}
