package tftp

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/netns"
)

const helperName = "TestHelperTFTPServer"

// TestIntegrationRealClients serves undionly.kpxe from inside a network namespace and fetches it
// with the real atftp and tftp-hpa clients from the client namespace.
func TestIntegrationRealClients(t *testing.T) {
	netns.RequireRoot(t)
	atftp := netns.RequireCommand(t, "atftp", "atftp")
	tftpHPA := netns.RequireCommand(t, "tftp", "tftp-hpa")
	const src = "/usr/lib/ipxe/undionly.kpxe"
	want, err := os.ReadFile(src)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: CI must install the Debian package ipxe", err)
		}
		t.Skipf("skipping: %v (apt-get install ipxe)", err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "undionly.kpxe"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	p := netns.NewPair(t)
	ready := filepath.Join(t.TempDir(), "ready")
	// The wildcard address, as in a default config: IPv4 requests then reach a dual-stack IPv6
	// socket, and the server still learns their destination address and interface (for the MTU).
	netns.StartHelper(t, p.Srv, helperName,
		"IMAGED_TFTP_LISTEN=:69", "IMAGED_TFTP_ROOT="+root, "IMAGED_TFTP_READY="+ready)
	waitFile(t, ready, 10*time.Second)

	for _, tc := range []struct {
		name string
		args func(out string) (string, []string)
		want string // in the client's output: evidence of the options
	}{
		{"atftp blksize 1468 tsize", func(out string) (string, []string) {
			return atftp, []string{"--trace", "--option", "blksize 1468", "--option", "tsize",
				"-g", "-r", "undionly.kpxe", "-l", out, p.SrvIP}
		}, "received OACK <tsize: " + strconv.Itoa(len(want))},
		{"atftp windowsize 8", func(out string) (string, []string) {
			return atftp, []string{"--trace", "--option", "blksize 1468", "--option", "windowsize 8",
				"-g", "-r", "undionly.kpxe", "-l", out, p.SrvIP}
		}, "windowsize: 8"},
		// blksize is capped to what fits the veth's 1500-byte MTU unfragmented.
		{"atftp blksize 8192 capped", func(out string) (string, []string) {
			return atftp, []string{"--trace", "--option", "blksize 8192",
				"-g", "-r", "undionly.kpxe", "-l", out, p.SrvIP}
		}, "blksize: 1468"},
		{"tftp-hpa 512", func(out string) (string, []string) {
			return tftpHPA, []string{"-v", "-m", "binary", p.SrvIP, "-c", "get", "undionly.kpxe", out}
		}, "[octet]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "got")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			name, args := tc.args(out)
			cmd := netns.Command(ctx, p.Cli, name, args...)
			cmd.Dir = t.TempDir()
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("sha256 %x (%d bytes), want %x (%d bytes)", sha256.Sum256(got), len(got), sha256.Sum256(want), len(want))
			}
			if !strings.Contains(string(b), tc.want) {
				t.Errorf("client output lacks %q:\n%s", tc.want, b)
			}
		})
	}
}

// TestHelperTFTPServer is the server for TestIntegrationRealClients, re-executed by
// netns.StartHelper inside the server namespace so that its socket lives there.
func TestHelperTFTPServer(t *testing.T) {
	if !netns.IsHelper(helperName) {
		t.Skip("helper process for TestIntegrationRealClients")
	}
	// Bounded even if the parent dies without stopping it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(Config{Listen: os.Getenv("IMAGED_TFTP_LISTEN"), Roots: []string{os.Getenv("IMAGED_TFTP_ROOT")}},
		Deps{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("IMAGED_TFTP_READY"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper not ready after %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
