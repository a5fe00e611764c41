package tftp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFetch fetches with pin/tftp's client at several block sizes and checks bytes, sha256,
// the tsize answer, the Observer record and the metrics.
func TestFetch(t *testing.T) {
	dir := t.TempDir()
	// 100000 bytes: several blocks at every size, and not a multiple of any of them.
	want := writeRandom(t, dir, "undionly.kpxe", 100000)
	even := writeRandom(t, dir, "even.bin", 8*1468) // ends with an empty DATA block
	empty := writeRandom(t, dir, "empty", 0)
	ts := startServer(t, Config{Roots: []string{dir}})
	for i, tc := range []struct {
		blksize int  // 0: no option
		tsize   bool // request tsize
		file    string
		data    []byte
	}{
		{0, false, "undionly.kpxe", want},
		{512, true, "undionly.kpxe", want},
		{1468, true, "undionly.kpxe", want},
		{8192, true, "/undionly.kpxe", want},
		{1468, false, "even.bin", even},
		{0, true, "empty", empty},
	} {
		t.Run(fmt.Sprintf("blksize=%d,tsize=%v,%s", tc.blksize, tc.tsize, tc.file), func(t *testing.T) {
			got, size, err := ts.fetch(tc.file, "octet", tc.blksize, tc.tsize)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.data) || sum(got) != sum(tc.data) {
				t.Fatalf("got %d bytes sha256 %x, want %d bytes %x", len(got), sum(got), len(tc.data), sum(tc.data))
			}
			wantSize := int64(-1)
			if tc.tsize {
				wantSize = int64(len(tc.data)) // RFC 2349: the OACK carries the file size
			}
			if size != wantSize {
				t.Errorf("tsize = %d, want %d", size, wantSize)
			}
			trs := ts.waitTransfers(i + 1)
			wantBlk := tc.blksize
			if wantBlk == 0 {
				wantBlk = 512
			}
			tr := trs[i]
			if d := cmp.Diff(Transfer{Remote: tr.Remote, File: tc.file, Bytes: int64(len(tc.data)), BlockSize: wantBlk, Outcome: OutcomeOK},
				tr, cmpopts.IgnoreFields(Transfer{}, "Duration"), cmpopts.EquateComparable(netip.AddrPort{})); d != "" {
				t.Errorf("Transfer (-want +got):\n%s", d)
			}
			if !tr.Remote.Addr().IsLoopback() || tr.Duration <= 0 {
				t.Errorf("Transfer remote %v duration %v", tr.Remote, tr.Duration)
			}
		})
	}
	total := 4*len(want) + len(even)
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues(OutcomeOK)); got != 6 {
		t.Errorf("transfers{ok} = %v, want 6", got)
	}
	if got := testutil.ToFloat64(ts.m.bytes); got != float64(total) {
		t.Errorf("sent bytes = %v, want %d", got, total)
	}
	if got := testutil.ToFloat64(ts.m.inFlight); got != 0 {
		t.Errorf("in flight = %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(ts.reg, "imaged_tftp_transfer_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration histogram: %d series, %v", n, err)
	}
}

func TestIPv6(t *testing.T) {
	if pc, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("skipping: no IPv6 loopback: %v", err)
	} else {
		pc.Close()
	}
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 3000)
	ts := startServer(t, Config{Roots: []string{dir}, Listen: "[::1]:0"})
	got, size, err := ts.fetch("f", "octet", 1468, true)
	if err != nil || !bytes.Equal(got, want) || size != 3000 {
		t.Fatalf("fetch over ::1: %d bytes, tsize %d, %v", len(got), size, err)
	}
	if tr := ts.waitTransfers(1)[0]; !tr.Remote.Addr().Is6() || tr.Outcome != OutcomeOK {
		t.Errorf("transfer %+v", tr)
	}
}

// The blksize a client asks for is capped by Config.MaxBlockSize.
func TestBlockSizeCap(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 5000)
	ts := startServer(t, Config{Roots: []string{dir}, MaxBlockSize: 1024})
	got, _, err := ts.fetch("f", "octet", 8192, false)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch: %d bytes, %v", len(got), err)
	}
	if tr := ts.waitTransfers(1)[0]; tr.BlockSize != 1024 {
		t.Errorf("block size %d, want 1024", tr.BlockSize)
	}
}

// RFC 1350 netascii: LF goes out as CR LF and CR as CR NUL; pin/tftp's client converts back.
func TestNetascii(t *testing.T) {
	dir := t.TempDir()
	text := strings.Repeat("line one\nline two\r\nbare\rcr\n", 100)
	mustWrite(t, filepath.Join(dir, "boot.txt"), text)
	ts := startServer(t, Config{Roots: []string{dir}})
	got, size, err := ts.fetch("boot.txt", "netascii", 512, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != text {
		t.Errorf("netascii round trip differs: got %d bytes, want %d", len(got), len(text))
	}
	if size != -1 {
		t.Errorf("tsize %d answered for netascii; the converted size is unknown", size)
	}
	wire := int64(len(text) + strings.Count(text, "\n") + strings.Count(text, "\r"))
	if tr := ts.waitTransfers(1)[0]; tr.Outcome != OutcomeOK || tr.Bytes != wire {
		t.Errorf("transfer %+v, want ok with %d bytes on the wire", tr, wire)
	}
}

// The first root holding a name serves it; the second serves what the first lacks.
func TestRoots(t *testing.T) {
	assets, ipxe := t.TempDir(), t.TempDir()
	first := writeRandom(t, assets, "ipxe.efi", 2000)
	writeRandom(t, ipxe, "ipxe.efi", 2000)
	second := writeRandom(t, ipxe, "undionly.kpxe", 3000)
	ts := startServer(t, Config{Roots: []string{assets, ipxe}})
	for name, want := range map[string][]byte{"ipxe.efi": first, "undionly.kpxe": second} {
		got, _, err := ts.fetch(name, "octet", 0, false)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %d bytes (%v), want the copy in the first root that has it", name, len(got), err)
		}
	}
	if _, _, err := ts.fetch("nowhere", "octet", 0, false); err == nil || !strings.Contains(err.Error(), "code: 1") {
		t.Errorf("missing file: %v, want file not found (code 1)", err)
	}
}

// New fails on a bad config, address or root, before anything serves.
func TestNew(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"bad address", Config{Listen: "256.0.0.1:69", Roots: []string{dir}}},
		{"no port", Config{Listen: "127.0.0.1", Roots: []string{dir}}},
		{"no listen", Config{Roots: []string{dir}}},
		{"no roots", Config{Listen: "127.0.0.1:0"}},
		{"missing root", Config{Listen: "127.0.0.1:0", Roots: []string{dir, filepath.Join(dir, "nope")}}},
		{"root is a file", Config{Listen: "127.0.0.1:0", Roots: []string{os.Args[0]}}},
		{"block size too small", Config{Listen: "127.0.0.1:0", Roots: []string{dir}, MaxBlockSize: 100}},
		{"negative timeout", Config{Listen: "127.0.0.1:0", Roots: []string{dir}, Timeout: -1}},
		{"negative max timeout", Config{Listen: "127.0.0.1:0", Roots: []string{dir}, MaxTimeout: -1}},
		{"negative first-ACK timeout", Config{Listen: "127.0.0.1:0", Roots: []string{dir}, FirstACKTimeout: -1}},
		{"negative per-client cap", Config{Listen: "127.0.0.1:0", Roots: []string{dir}, MaxPerClient: -1}},
	} {
		if _, err := New(tc.cfg, Deps{}); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	// A port in use fails in New.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := New(Config{Listen: pc.LocalAddr().String(), Roots: []string{dir}}, Deps{}); err == nil {
		t.Error("New on a port in use succeeded")
	}
	// Metrics registered twice on one registry fail, and release the socket.
	reg := prometheus.NewRegistry()
	s, err := New(Config{Listen: "127.0.0.1:0", Roots: []string{dir}}, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	_, err = New(Config{Listen: "127.0.0.1:0", Roots: []string{dir}}, Deps{Registerer: reg})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second New on one registry: %v, want AlreadyRegisteredError", err)
	}
}
