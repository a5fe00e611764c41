package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The initramfs's /init is the agent program: without -agent it is imaged-agent beside this
// executable, and when there is none the command says where it looked and what to do, before
// it downloads or reads anything.
func TestInitrdBuildFindsTheAgent(t *testing.T) {
	_, _, err := runCmd(t, "initrd", "build", "-modules", t.TempDir(), "-out", filepath.Join(t.TempDir(), "initrd.img"))
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "imaged-agent") || !strings.Contains(err.Error(), "-agent") {
		t.Errorf("initrd build with no imaged-agent beside the test binary: %v", err)
	}
	// Named with -agent, it must be a build of cmd/imaged-agent: this test binary is a build of
	// cmd/imaged, as the server is, which as /init would print its usage and exit.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = runCmd(t, "initrd", "build", "-agent", self, "-modules", t.TempDir(), "-out", filepath.Join(t.TempDir(), "initrd.img"))
	if err == nil || !strings.Contains(err.Error(), "is a build of github.com/imaged/imaged/cmd/imaged, not of github.com/imaged/imaged/cmd/imaged-agent") {
		t.Errorf("initrd build -agent <the test binary>: %v", err)
	}
}
