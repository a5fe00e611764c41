package tftp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRefusals: traversal, absolute names and escaping symlinks get an ERROR and a Warn log
// line naming the remote and the requested name; a symlink that stays inside is served.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	mustMkdirAll(t, filepath.Join(root, "sub"))
	want := writeRandom(t, root, "sub/f.bin", 3000)
	mustWrite(t, filepath.Join(dir, "secret"), "SECRET")
	mustSymlink(t, "../secret", filepath.Join(root, "escape"))
	mustSymlink(t, filepath.Join(dir, "secret"), filepath.Join(root, "escape-abs"))
	mustSymlink(t, "/etc", filepath.Join(root, "etc"))
	mustSymlink(t, "sub/f.bin", filepath.Join(root, "inside"))
	ts := startServer(t, Config{Roots: []string{root}})

	for _, tc := range []struct {
		name    string
		code    uint16 // 0: served
		outcome string
		msg     string // log message
	}{
		{"../etc/passwd", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"/../x", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"a/../../x", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"sub/../sub/f.bin", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{`..\..\etc\passwd`, codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"//etc/passwd", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		// One leading slash means the root: this is root/boot/grub.cfg, and root has no boot/.
		{"/boot/grub.cfg", codeNotFound, OutcomeNotFound, "tftp: file not found"},
		{"/etc/passwd", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"}, // root/etc -> /etc
		{"escape", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"escape-abs", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"},
		{"sub", codeAccessViolation, OutcomeAccessViolation, "tftp: access violation"}, // a directory
		{"missing.efi", codeNotFound, OutcomeNotFound, "tftp: file not found"},
		{"inside", 0, OutcomeOK, "tftp: file sent"}, // a symlink that stays inside is fine
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.raw()
			n := len(ts.obs.all())
			c.send(rrq(tc.name))
			p := c.mustRecv(2 * time.Second)
			if tc.code == 0 {
				blk, data := dataBlock(t, p)
				var got []byte
				for ; ; blk++ {
					got = append(got, data...)
					c.send(ack(blk))
					if len(data) < 512 {
						break
					}
					_, data = dataBlock(t, c.mustRecv(2*time.Second))
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want %d", len(got), len(want))
				}
			} else {
				msg := wantError(t, p, tc.code)
				if strings.Contains(msg, "SECRET") || strings.Contains(msg, "/") {
					t.Errorf("error message %q reveals too much", msg)
				}
			}
			tr := ts.waitTransfers(n + 1)[n]
			if tr.Outcome != tc.outcome || tr.File != tc.name {
				t.Errorf("transfer %+v, want outcome %s for %q", tr, tc.outcome, tc.name)
			}
			level := "WARN"
			if tc.code == 0 {
				level = "INFO"
			}
			recs := ts.logs.find(level, tc.msg, tc.name)
			if len(recs) != 1 || recs[0]["remote"] != c.addr() {
				t.Errorf("want one %s log %q for %q from %s, got %v", level, tc.msg, tc.name, c.addr(), recs)
			}
		})
	}
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues(OutcomeAccessViolation)); got != 10 {
		t.Errorf("transfers{access_violation} = %v, want 10", got)
	}
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues(OutcomeNotFound)); got != 2 {
		t.Errorf("transfers{not_found} = %v, want 2", got)
	}
}

// A WRQ gets an access violation, is counted and logged, and writes nothing.
func TestWriteRefused(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, Config{Roots: []string{dir}})
	c := ts.raw()
	c.send(req(opWRQ, "upload.bin", "octet", "blksize", "1468"))
	wantError(t, c.mustRecv(2*time.Second), codeAccessViolation)
	if got := testutil.ToFloat64(ts.m.ignored.WithLabelValues(ignoredWrite)); got != 1 {
		t.Errorf("ignored{write} = %v, want 1", got)
	}
	if recs := ts.logs.find("WARN", "tftp: write request refused: read-only server", "upload.bin"); len(recs) != 1 {
		t.Errorf("want one WARN for the WRQ, got %v", recs)
	}
	// pin/tftp's client sees the refusal too, and nothing was written.
	pc := ts.client(0, false)
	rf, err := pc.Send("upload2.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil || !strings.Contains(err.Error(), "code=2") {
		t.Errorf("pin/tftp client upload: %v, want an access violation (code 2)", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("root has %d entries after WRQ, want 0", len(entries))
	}
}

func TestBadMode(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "f", 10)
	ts := startServer(t, Config{Roots: []string{dir}})
	c := ts.raw()
	c.send(req(opRRQ, "f", "mail"))
	wantError(t, c.mustRecv(2*time.Second), codeIllegal)
}

// Past MaxTransfers, requests are refused with an ERROR until a slot frees.
func TestConcurrencyLimit(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 100) // one block
	ts := startServer(t, Config{Roots: []string{dir}, MaxTransfers: 2})
	var holders []*rawClient
	for range 2 {
		c := ts.raw()
		c.send(rrq("f"))
		dataBlock(t, c.mustRecv(time.Second)) // in flight until acknowledged
		holders = append(holders, c)
	}
	if got := testutil.ToFloat64(ts.m.inFlight); got != 2 {
		t.Errorf("in flight = %v, want 2", got)
	}
	c := ts.raw()
	c.send(rrq("f"))
	if msg := wantError(t, c.mustRecv(time.Second), codeUndefined); !strings.Contains(msg, "busy") {
		t.Errorf("refusal message %q", msg)
	}
	if tr := ts.waitTransfers(1)[0]; tr.Outcome != OutcomeBusy || tr.Remote.String() != c.addr() {
		t.Errorf("transfer %+v, want busy from %s", tr, c.addr())
	}
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues(OutcomeBusy)); got != 1 {
		t.Errorf("transfers{busy} = %v, want 1", got)
	}
	for _, h := range holders {
		h.send(ack(1))
	}
	ts.waitTransfers(3)
	got, _, err := ts.fetch("f", "octet", 0, false) // a slot is free again
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch after the holders finished: %v", err)
	}
}

// A retransmitted RRQ (same client TID) does not start a second transfer.
func TestDuplicateRequest(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "f", 600)
	ts := startServer(t, Config{Roots: []string{dir}})
	c := ts.raw()
	c.send(rrq("f"))
	c.send(rrq("f")) // the client's retransmission, same TID
	blk, _ := dataBlock(t, c.mustRecv(time.Second))
	if p := c.recv(200 * time.Millisecond); p != nil {
		t.Fatalf("second answer %q to a retransmitted RRQ", p)
	}
	c.send(ack(blk))
	dataBlock(t, c.mustRecv(time.Second))
	c.send(ack(2))
	ts.waitTransfers(1)
	if got := testutil.ToFloat64(ts.m.ignored.WithLabelValues(ignoredDuplicate)); got != 1 {
		t.Errorf("ignored{duplicate} = %v, want 1", got)
	}
}
