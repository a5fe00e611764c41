package vbmc

import (
	"testing"

	"github.com/imaged/imaged/internal/deptest"
)

// TestDeps keeps the emulator an independent implementation of the Redfish spec on the
// standard library alone: if it shared code with imaged's Redfish client (internal/redfish,
// gofish), the client's tests against it would check the client against itself. It writes its
// certificates with internal/atomicfile, itself on the standard library alone.
func TestDeps(t *testing.T) {
	deptest.Check(t, "github.com/imaged/imaged/internal/lab/vbmc", deptest.Rules{
		Imaged:  []string{"github.com/imaged/imaged/internal/lab/vbmc", "github.com/imaged/imaged/internal/atomicfile"},
		Modules: []string{},
		Why:     "it must use the standard library only",
	})
}
