// Package netns builds throw-away network namespaces for integration tests.
//
// Every DHCP or TFTP server and client that a test starts, and every broadcast it sends, must run
// inside namespaces made here: never on the host's own interfaces. Only test code imports this
// package.
package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab"
)

// RequireRoot skips t unless the test runs as root with the ip tool available. CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (CI runs this as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip tool (iproute2) is not installed")
	}
}

// RequireCommand skips t when a real client or peer under test is missing, naming the package.
// CI installs them all, so there it never skips.
func RequireCommand(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: CI must install the Debian package %s", name, debianPackage)
		}
		t.Skipf("skipping: %s not found (apt-get install %s)", name, debianPackage)
	}
	return p
}

var seq atomic.Int64

// Pair is two namespaces joined by a veth pair: Srv holds the server under test on SrvIf with
// SrvIP, Cli holds a bridge (CliBridge, CliIP) to which clients attach more links with AddClient.
// It is a lab.Network that the test's end removes.
type Pair struct {
	Srv, Cli     string
	SrvIf        string
	CliBridge    string
	SrvIP, CliIP string // dotted quads, /24 unless NewPairPrefix said otherwise
	Prefix       int
	t            testing.TB
	net          *lab.Network
	clients      int
}

// NewPair creates a namespace pair with 10.99.0.1/24 (server) and 10.99.0.2/24 (client bridge),
// and fd99::1/64 on the server side for router advertisements. It is deleted when t ends.
func NewPair(t testing.TB) *Pair { return NewPairPrefix(t, "10.99.0.1", "10.99.0.2", 24) }

// NewPairPrefix is NewPair with other addresses (perfdhcp's relay mode wants a /16).
func NewPairPrefix(t testing.TB, srvIP, cliIP string, prefix int) *Pair {
	t.Helper()
	RequireRoot(t)
	n := &lab.Network{Prefix: fmt.Sprintf("imt%d-%d", os.Getpid()%100000, seq.Add(1)), SrvIP: srvIP, CliIP: cliIP, Bits: prefix}
	t.Cleanup(n.Down)
	if err := n.Up(); err != nil {
		t.Fatal(err)
	}
	return &Pair{Srv: n.Srv(), Cli: n.Cli(), SrvIf: n.SrvIf(), CliBridge: "br0", SrvIP: srvIP, CliIP: cliIP, Prefix: prefix, t: t, net: n}
}

// AddTap adds a tap device on the client bridge for a QEMU VM and returns its name.
func (p *Pair) AddTap() string {
	p.t.Helper()
	name, err := p.net.AddTap()
	if err != nil {
		p.t.Fatal(err)
	}
	return name
}

// AddClient creates a third namespace with one interface (dc0, link-local only, no address)
// bridged to the client side, for DHCP clients such as udhcpc and dhclient. mac may be empty.
func (p *Pair) AddClient(mac string) (ns, ifname string) {
	p.t.Helper()
	p.clients++
	ns, err := p.net.AddHost(fmt.Sprintf("c%d", p.clients), "dc0", mac, "")
	if err != nil {
		p.t.Fatal(err)
	}
	return ns, "dc0"
}

// Command returns a command that runs name inside namespace ns.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return lab.Command(ctx, ns, name, args...)
}

// HelperEnv is set in the environment of a test binary re-executed by StartHelper.
const HelperEnv = "IMAGED_TEST_HELPER"

// StartHelper re-executes the running test binary inside namespace ns, running only the test
// named helper (which must call IsHelper and do its work when it returns true). Servers under
// test thereby open every socket inside the namespace. The process is killed when t ends; its
// output goes to t.Log. env is added to the environment.
func StartHelper(t testing.TB, ns, helper string, env ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self, "-test.run=^"+helper+"$", "-test.v")
	cmd.Env = append(append(os.Environ(), HelperEnv+"="+helper), env...)
	out := &logWriter{t: t, prefix: helper + ": "}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		out.close()
	})
	return cmd
}

// IsHelper reports whether this process is a helper started by StartHelper for the test name.
func IsHelper(name string) bool { return os.Getenv(HelperEnv) == name }

type logWriter struct {
	t      testing.TB
	prefix string
	closed atomic.Bool
}

func (w *logWriter) Write(b []byte) (int, error) {
	if !w.closed.Load() {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			w.t.Log(w.prefix + l)
		}
	}
	return len(b), nil
}

func (w *logWriter) close() { w.closed.Store(true) }
