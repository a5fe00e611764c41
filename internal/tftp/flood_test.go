package tftp

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestOneHostCannotTakeEverySlot is the attack of issue 11, finding 3: one host sends read
// requests with timeout=255 from many source ports and never acknowledges them. Each held a
// transfer slot for 255 s × (Retries + 1), about 25 minutes, and once all 64 were taken no blade
// could boot. Now one address gets MaxPerClient slots, the 255 s timeout is declined, and the
// slots it holds are released within Timeout × (Retries + 1); another client still fetches at
// once. The attacker is 127.0.0.2; pin/tftp's client cannot choose its source address, so the
// legitimate client is 127.0.0.1.
func TestOneHostCannotTakeEverySlot(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "ipxe.efi", 100000)
	// The default slots (64), per-client cap and timeout cap; a short Timeout of the server's
	// own, so that the release is seen within a second or two.
	const timeout = 150 * time.Millisecond
	ts := startServer(t, Config{Roots: []string{dir}, Timeout: timeout})
	bound := time.Duration(ts.cfg.Retries+1) * timeout

	const requests = 80 // more than the 64 slots
	attacker := net.IPv4(127, 0, 0, 2)
	server := ts.Addr().(*net.UDPAddr)
	socks := make([]*net.UDPConn, requests)
	sent := time.Now()
	for i := range socks {
		c := ts.rawFrom(attacker).conn // its own source port
		socks[i] = c
		if _, err := c.WriteToUDP(rrq("ipxe.efi", "blksize", "1468", "tsize", "0", "timeout", "255"), server); err != nil {
			t.Fatal(err)
		}
	}
	// Each request gets one first answer: an OACK for a transfer that holds a slot, or an ERROR.
	held, refused, accepted := 0, 0, 0
	for i, c := range socks {
		switch p := firstAnswer(t, c); opcode(p) {
		case opOACK:
			held++
			if bytes.Contains(p, []byte("timeout\x00")) {
				accepted++
			}
		case opERROR:
			refused++
		default:
			t.Fatalf("request %d: answer %q", i, p)
		}
	}
	if accepted > 0 {
		t.Errorf("%d OACKs accept timeout=255", accepted)
	}
	if held != ts.cfg.MaxPerClient || refused != requests-held {
		t.Errorf("one address holds %d transfers (%d refused), want %d (MaxPerClient)", held, refused, ts.cfg.MaxPerClient)
	}
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues("client_busy")); got != float64(requests-ts.cfg.MaxPerClient) {
		t.Errorf(`transfers{outcome="client_busy"} = %v, want %d`, got, requests-ts.cfg.MaxPerClient)
	}

	// A blade from another address boots while the attacker still holds its slots.
	start := time.Now()
	got, _, err := ts.fetch("ipxe.efi", "octet", 1468, true)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch during the flood: %d bytes, %v", len(got), err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("fetch during the flood took %v", d)
	}

	// The attacker's slots are released within Timeout × (Retries + 1), not 25 minutes.
	ts.waitIdle(sent, bound)
	// The address is not banned: once its transfers ended it is served again.
	c := ts.rawFrom(attacker)
	c.send(rrq("ipxe.efi", "blksize", "1468"))
	if p := c.mustRecv(time.Second); opcode(p) != opOACK {
		t.Errorf("after the release, 127.0.0.2 got %q, want an OACK", p)
	}
	c.send(appendError(nil, codeOptions, "done"))
}

// Many hosts, one unanswered request each with timeout=255: every slot fills (the per-client cap
// cannot help), and all are released within Timeout × (Retries + 1) since the 255 s timeout is
// declined; then a blade boots.
func TestUnansweredSlotsReleased(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "ipxe.efi", 5000)
	const timeout = 150 * time.Millisecond
	ts := startServer(t, Config{Roots: []string{dir}, Timeout: timeout})
	bound := time.Duration(ts.cfg.Retries+1) * timeout
	server := ts.Addr().(*net.UDPAddr)
	sent := time.Now()
	accepted := 0
	for i := range ts.cfg.MaxTransfers {
		c := ts.rawFrom(net.IPv4(127, 0, 1, byte(1+i))).conn
		if _, err := c.WriteToUDP(rrq("ipxe.efi", "blksize", "1468", "timeout", "255"), server); err != nil {
			t.Fatal(err)
		}
		p := firstAnswer(t, c)
		if opcode(p) != opOACK {
			t.Fatalf("host %d: answer %q, want an OACK", i, p)
		}
		if bytes.Contains(p, []byte("timeout\x00")) {
			accepted++
		}
	}
	if accepted > 0 {
		t.Errorf("%d OACKs accept timeout=255", accepted)
	}
	if _, _, err := ts.fetch("ipxe.efi", "octet", 1468, true); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("fetch with every slot taken: %v, want busy", err)
	}
	ts.waitIdle(sent, bound)
	got, _, err := ts.fetch("ipxe.efi", "octet", 1468, true)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch once the slots are released: %d bytes, %v", len(got), err)
	}
}

// firstAnswer reads the server's first answer to a request sent from c.
func firstAnswer(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer from the server: %v", err)
	}
	return buf[:n]
}

// waitIdle waits until no transfer is in flight, and fails if that takes past bound (with a
// second of slack for a loaded machine) after since, or if an unanswered transfer held its slot
// longer.
func (ts *testServer) waitIdle(since time.Time, bound time.Duration) {
	ts.t.Helper()
	for testutil.ToFloat64(ts.m.inFlight) > 0 && time.Since(since) < bound+5*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.ToFloat64(ts.m.inFlight); n != 0 || time.Since(since) > bound+time.Second {
		ts.t.Fatalf("%v transfers still in flight %v after the requests (bound %v)", n, time.Since(since), bound)
	}
	for _, tr := range ts.obs.all() {
		if tr.Outcome == OutcomeError && tr.Duration > bound+time.Second {
			ts.t.Errorf("an unanswered transfer held its slot for %v, bound %v", tr.Duration, bound)
		}
	}
}

// Before the client's first ACK, FirstACKTimeout bounds the whole wait, whatever the negotiated
// timeout; after it, a silent client is given Timeout × (Retries + 1) as before.
func TestFirstACKTimeout(t *testing.T) {
	dir := t.TempDir()
	writeRandom(t, dir, "f", 3*512)
	const budget = 500 * time.Millisecond
	ts := startServer(t, Config{Roots: []string{dir}, Timeout: 200 * time.Millisecond, Retries: 5, FirstACKTimeout: budget})

	// timeout=2 is accepted (under MaxTimeout) but the first wait still ends at the budget: the
	// socket's receive timeout is shortened to match, or the ERROR would come after 2 s.
	c := ts.raw()
	start := time.Now()
	c.send(rrq("f", "timeout", "2"))
	if p := c.mustRecv(time.Second); opcode(p) != opOACK || !bytes.Contains(p, []byte("timeout\x002\x00")) {
		t.Fatalf("want an OACK with timeout 2, got %q", p)
	}
	if msg := wantError(t, c.mustRecv(3*time.Second), codeUndefined); msg != "timeout" {
		t.Errorf("error message %q", msg)
	}
	if d := time.Since(start); d < budget-50*time.Millisecond || d > 3*budget {
		t.Errorf("unanswered OACK given up after %v, want about %v (not the 2 s timeout)", d, budget)
	}

	// Without options: block 1 is sent every 200 ms until the budget, then an ERROR.
	c = ts.raw()
	start = time.Now()
	c.send(rrq("f"))
	copies := 0
	for {
		p := c.mustRecv(time.Second)
		if opcode(p) == opERROR {
			break
		}
		if blk, _ := dataBlock(t, p); blk != 1 {
			t.Fatalf("block %d", blk)
		}
		copies++
	}
	if d := time.Since(start); copies < 2 || copies > 3 || d > 3*budget {
		t.Errorf("%d copies of block 1 in %v, want 2 or 3 within about %v", copies, d, budget)
	}

	// Once the client has acknowledged a block, the budget no longer applies.
	c = ts.raw()
	start = time.Now()
	c.send(rrq("f"))
	dataBlock(t, c.mustRecv(time.Second))
	c.send(ack(1))
	copies = 0
	for {
		p := c.mustRecv(2 * time.Second)
		if opcode(p) == opERROR {
			break
		}
		copies++
	}
	if d := time.Since(start); copies != 6 || d < 1100*time.Millisecond {
		t.Errorf("after the first ACK: %d copies of block 2 in %v, want 6 over 1.2 s", copies, d)
	}
	trs := ts.waitTransfers(3)
	for _, tr := range trs {
		if tr.Outcome != OutcomeError {
			t.Errorf("transfer %+v, want error", tr)
		}
	}
}
