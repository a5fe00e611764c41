package tftp

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// UEFI (EDK2) asks for tsize, aborts after the OACK with ERROR 8, then asks again for the file.
func TestTsizeProbe(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "ipxe.efi", 5000)
	ts := startServer(t, Config{Roots: []string{dir}})

	c := ts.raw()
	c.send(rrq("ipxe.efi", "blksize", "1468", "tsize", "0"))
	p := c.mustRecv(2 * time.Second)
	if opcode(p) != opOACK || !bytes.Contains(p, []byte("tsize\x005000\x00")) {
		t.Fatalf("want an OACK with tsize 5000, got %q", p)
	}
	c.send(appendError(nil, codeOptions, "User aborted the transfer"))
	if p := c.recv(200 * time.Millisecond); p != nil {
		t.Errorf("server answered the client's ERROR with %q (RFC 1350: errors are not acknowledged)", p)
	}
	got, size, err := ts.fetch("ipxe.efi", "octet", 1468, true)
	if err != nil || !bytes.Equal(got, want) || size != 5000 {
		t.Fatalf("transfer after the probe: %d bytes, tsize %d, %v", len(got), size, err)
	}
	trs := ts.waitTransfers(2)
	if trs[0].Outcome != OutcomeTsizeProbe || trs[1].Outcome != OutcomeOK {
		t.Errorf("outcomes %s, %s; want %s, %s", trs[0].Outcome, trs[1].Outcome, OutcomeTsizeProbe, OutcomeOK)
	}
	if got := testutil.ToFloat64(ts.m.transfers.WithLabelValues(OutcomeTsizeProbe)); got != 1 {
		t.Errorf("transfers{aborted_tsize_probe} = %v, want 1", got)
	}
	for _, r := range ts.logs.records() {
		if r["level"] != "DEBUG" && r["level"] != "INFO" {
			t.Errorf("a normal probe logged above Info: %v", r)
		}
	}

	// The same ERROR after an OACK without tsize is a failed negotiation, not a probe.
	c = ts.raw()
	c.send(rrq("ipxe.efi", "blksize", "1468"))
	if p := c.mustRecv(2 * time.Second); opcode(p) != opOACK {
		t.Fatalf("want OACK, got %q", p)
	}
	c.send(appendError(nil, codeOptions, "no thanks"))
	if tr := ts.waitTransfers(3)[2]; tr.Outcome != OutcomeError {
		t.Errorf("outcome %s, want %s", tr.Outcome, OutcomeError)
	}
}

// RFC 1350: a lost DATA packet is sent again after the timeout; a duplicate ACK is not answered
// (the Sorcerer's Apprentice bug); after Retries the transfer is given up with an ERROR.
// The timeouts are the kernel's (SO_RCVTIMEO on a real socket), which testing/synctest cannot
// fake, so this test waits for real, briefly.
func TestRetransmit(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 700) // two blocks
	ts := startServer(t, Config{Roots: []string{dir}, Timeout: 300 * time.Millisecond, Retries: 2})

	c := ts.raw()
	c.send(rrq("f"))
	first := c.mustRecv(time.Second)
	start := time.Now()
	again := c.mustRecv(2 * time.Second) // not acknowledged: retransmitted
	if !bytes.Equal(first, again) {
		t.Fatalf("retransmission differs")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("retransmitted after %v, before the 300ms timeout", d)
	}
	c.send(ack(1))
	c.send(ack(1)) // duplicate
	blk, data := dataBlock(t, c.mustRecv(time.Second))
	if blk != 2 || !bytes.Equal(append(first[4:], data...), want) {
		t.Fatalf("block %d, data differs", blk)
	}
	if p := c.recv(150 * time.Millisecond); p != nil {
		t.Fatalf("duplicate ACK answered with %q", p)
	}
	c.send(ack(2))
	if tr := ts.waitTransfers(1)[0]; tr.Outcome != OutcomeOK || tr.Bytes != 700 {
		t.Errorf("transfer %+v", tr)
	}

	// Never acknowledged: 1 + Retries copies of block 1, then an ERROR.
	c = ts.raw()
	c.send(rrq("f"))
	for i := range 3 {
		if blk, _ := dataBlock(t, c.mustRecv(2*time.Second)); blk != 1 {
			t.Fatalf("copy %d: block %d", i, blk)
		}
	}
	wantError(t, c.mustRecv(2*time.Second), codeUndefined)
	if tr := ts.waitTransfers(2)[1]; tr.Outcome != OutcomeError || tr.Bytes != 0 {
		t.Errorf("transfer %+v, want error", tr)
	}
}

// RFC 7440: the server sends windowsize blocks per ACK and resumes after the block acknowledged.
func TestWindowsize(t *testing.T) {
	dir := t.TempDir()
	want := writeRandom(t, dir, "f", 10*512+100) // 11 blocks
	ts := startServer(t, Config{Roots: []string{dir}, MaxWindow: 4})
	c := ts.raw()
	c.send(rrq("f", "windowsize", "8", "tsize", "0"))
	p := c.mustRecv(time.Second)
	if opcode(p) != opOACK || !bytes.Contains(p, []byte("windowsize\x004\x00")) {
		t.Fatalf("want OACK with windowsize capped to 4, got %q", p)
	}
	c.send(ack(0))
	recvBlocks := func(from, to uint16) {
		t.Helper()
		for n := from; n <= to; n++ {
			blk, data := dataBlock(t, c.mustRecv(time.Second))
			if blk != n || !bytes.Equal(data, want[int(n-1)*512:min(int(n)*512, len(want))]) {
				t.Fatalf("got block %d, want %d with its data", blk, n)
			}
		}
	}
	recvBlocks(1, 4)
	c.send(ack(2)) // as if block 3 were lost: resume at 3
	recvBlocks(3, 6)
	c.send(ack(6))
	recvBlocks(7, 10)
	c.send(ack(10))
	recvBlocks(11, 11)
	c.send(ack(11))
	if tr := ts.waitTransfers(1)[0]; tr.Outcome != OutcomeOK || tr.Bytes != int64(len(want)) {
		t.Errorf("transfer %+v", tr)
	}
}

// Block numbers wrap from 65535 to 0 (files over 32 MiB at 512-byte blocks).
func TestBlockRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 65537 blocks")
	}
	dir := t.TempDir()
	want := writeRandom(t, dir, "big", 65536*512+300)
	ts := startServer(t, Config{Roots: []string{dir}})
	got, _, err := ts.fetch("big", "octet", 0, false)
	if err != nil || sum(got) != sum(want) {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(want))
	}
}

// TestNegotiate covers the option answers (RFC 2347/2348/2349/7440) and the MTU cap.
func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		opts    []string
		mode    string
		ifMTU   int // 0: unknown interface
		blksize int
		window  int
		timeout time.Duration
		oack    string
	}{
		{nil, "octet", 0, 512, 1, time.Second, ""},
		{[]string{"blksize", "1468", "tsize", "0"}, "octet", 1500, 1468, 1, time.Second, "blksize=1468 tsize=42"},
		// The interface MTU bounds blksize: 1500 - 20 (IPv4) - 8 (UDP) - 4 (TFTP) = 1468.
		{[]string{"blksize", "8192"}, "octet", 1500, 1468, 1, time.Second, "blksize=1468"},
		{[]string{"blksize", "65464"}, "octet", 65536, 65464, 1, time.Second, "blksize=65464"},
		{[]string{"blksize", "4"}, "octet", 1500, 512, 1, time.Second, ""},                    // below RFC 2348's 8: ignored
		{[]string{"blksize", "x", "blksize", "1024"}, "octet", 1500, 512, 1, time.Second, ""}, // first one counts
		{[]string{"tsize", "0"}, "netascii", 0, 512, 1, time.Second, ""},
		{[]string{"timeout", "3"}, "octet", 0, 512, 1, 3 * time.Second, "timeout=3"},
		{[]string{"timeout", "0"}, "octet", 0, 512, 1, time.Second, ""},
		{[]string{"timeout", "5"}, "octet", 0, 512, 1, 5 * time.Second, "timeout=5"}, // MaxTimeout itself
		// Above MaxTimeout: declined, left out of the OACK (RFC 2349 allows no other value).
		{[]string{"timeout", "6", "blksize", "1024"}, "octet", 1500, 1024, 1, time.Second, "blksize=1024"},
		{[]string{"timeout", "255"}, "octet", 0, 512, 1, time.Second, ""},
		{[]string{"windowsize", "64", "blksize", "1468"}, "octet", 1500, 1468, 16, time.Second, "windowsize=16 blksize=1468"},
		{[]string{"windowsize", "16", "blksize", "65464"}, "octet", 65536, 65464, 16, time.Second, "windowsize=16 blksize=65464"},
		{[]string{"windowsize", "0"}, "octet", 0, 512, 1, time.Second, ""},
		{[]string{"multicast", "", "utimeout", "1000"}, "octet", 0, 512, 1, time.Second, ""},
	} {
		r, err := parseRequest(req(opRRQ, "f", tc.mode, tc.opts...))
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{cfg: Config{Timeout: time.Second, MaxTimeout: 5 * time.Second, MaxBlockSize: maxBlockSize, MaxWindow: 16}}
		tr := &transfer{s: s, req: r, remote: netip.MustParseAddrPort("10.0.0.2:1234")}
		tr.negotiate(42, func() int { return tc.ifMTU })
		var oack []string
		for _, o := range tr.oack {
			oack = append(oack, o.name+"="+o.value)
		}
		if tr.blksize != tc.blksize || tr.window != tc.window || tr.timeout != tc.timeout || strings.Join(oack, " ") != tc.oack {
			t.Errorf("%v %s: blksize %d window %d timeout %v oack %q; want %d %d %v %q", tc.opts, tc.mode,
				tr.blksize, tr.window, tr.timeout, oack, tc.blksize, tc.window, tc.timeout, tc.oack)
		}
	}
}

func TestNetasciiReader(t *testing.T) {
	for in, want := range map[string]string{
		"":           "",
		"a\nb":       "a\r\nb",
		"a\r\nb":     "a\r\x00\r\nb",
		"\r":         "\r\x00",
		"\n\n":       "\r\n\r\n",
		"plain text": "plain text",
	} {
		var out bytes.Buffer
		// Read one byte at a time too, so a conversion split across reads is covered.
		for _, chunk := range []int{1, 3, 4096} {
			out.Reset()
			r := newNetasciiReader(bufio.NewReader(strings.NewReader(in)))
			buf := make([]byte, chunk)
			for {
				n, err := r.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if out.String() != want {
				t.Errorf("netascii(%q) in chunks of %d = %q, want %q", in, chunk, out.String(), want)
			}
		}
	}
}
