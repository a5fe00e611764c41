// Package deptest checks what a package pulls in (as tailscale's deptest does), from the
// package's own tests or, for rules several packages share, from tables here: the agent's
// initramfs must not carry the server's dependencies, the BMC emulator must stay independent of
// the client it tests, leaves must stay leaves (TestLeaves), and the services (jobs, inventory,
// api) never link the store. Only tests import it.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// Rules say what a package may depend on. Standard-library packages are always allowed.
type Rules struct {
	// Forbidden lists import-path prefixes that must not appear at all.
	Forbidden []string
	// Imaged lists the imaged packages (github.com/imaged/imaged/…) it may import, itself
	// included; any other imaged package is an error.
	Imaged []string
	// Modules lists the import-path prefixes of other modules it may import; nil allows any
	// module not Forbidden.
	Modules []string
	// Why is said with each violation.
	Why string
}

// ServerModules are the server's heavy dependencies, which never ship on a blade.
var ServerModules = []string{"go.etcd.io/bbolt", "github.com/aws/", "github.com/stmcginnis/gofish", "github.com/prometheus"}

// Check lists pkg's non-standard dependencies with `go list -deps` and reports each one the rules
// do not allow.
func Check(t *testing.T, pkg string, r Rules) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list printed nothing for %s: too little to trust", pkg)
	}
	prefix := func(d string, ps []string) bool {
		for _, p := range ps {
			if strings.HasPrefix(d, p) {
				return true
			}
		}
		return false
	}
	for _, d := range deps {
		switch {
		case prefix(d, r.Forbidden):
			t.Errorf("%s depends on %s: %s", pkg, d, r.Why)
		case strings.HasPrefix(d, "github.com/imaged/imaged/"):
			ok := false
			for _, a := range r.Imaged {
				ok = ok || d == a
			}
			if !ok {
				t.Errorf("%s depends on %s, which is not among the imaged packages it may use: %s", pkg, d, r.Why)
			}
		case r.Modules != nil && !prefix(d, r.Modules):
			t.Errorf("%s depends on %s, a module it may not use: %s", pkg, d, r.Why)
		}
	}
}
