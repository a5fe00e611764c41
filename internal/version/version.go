// Package version holds imaged's version, set at build time:
//
//	go build -ldflags "-X github.com/imaged/imaged/internal/version.Version=v1.2.3" ./cmd/imaged
//
// It is a leaf that both the daemon and the agent (which ships on blades) may import.
package version

import "runtime/debug"

// Version is the release or the git description of the build; "dev" when not set.
var Version = "dev"

// String is Version with the Go toolchain that built the binary, for `imaged version`.
func String() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return Version + " (" + bi.GoVersion + ")"
	}
	return Version
}
