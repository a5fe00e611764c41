package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// testServer is a Server on 127.0.0.1 at a kernel-chosen port, running until the test ends.
type testServer struct {
	*Server
	t      *testing.T
	logs   *logBuf
	reg    *prometheus.Registry
	obs    *recorder
	cancel context.CancelFunc
	done   chan error // Run's result
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	ts := &testServer{t: t, logs: &logBuf{}, reg: prometheus.NewRegistry(), obs: &recorder{}, done: make(chan error, 1)}
	log := slog.New(slog.NewJSONHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, Deps{Log: log, Registerer: ts.reg, Observer: ts.obs})
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return ts
}

func (ts *testServer) addr() string { return ts.Addr().String() }

// client returns pin/tftp's client for the server: an implementation independent of ours.
func (ts *testServer) client(blksize int, tsize bool) *pintftp.Client {
	c, err := pintftp.NewClient(ts.addr())
	if err != nil {
		ts.t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	return c
}

// fetch gets name with pin/tftp's client; size is the tsize the server announced (-1 if none).
func (ts *testServer) fetch(name, mode string, blksize int, tsize bool) (data []byte, size int64, err error) {
	wt, err := ts.client(blksize, tsize).Receive(name, mode)
	if err != nil {
		return nil, 0, err
	}
	size = -1
	if n, ok := wt.(pintftp.IncomingTransfer).Size(); ok {
		size = n
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), size, err
}

// waitTransfers waits until the Observer has seen n transfers and returns them.
func (ts *testServer) waitTransfers(n int) []Transfer {
	ts.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := ts.obs.all()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("observer saw %d transfers, want %d: %+v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorder struct {
	mu sync.Mutex
	tr []Transfer
}

func (r *recorder) TransferDone(t Transfer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tr = append(r.tr, t)
}

func (r *recorder) all() []Transfer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transfer(nil), r.tr...)
}

// logBuf collects JSON log records.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) records() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(l.buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// find returns the log records with the given level and message whose file attribute is file.
func (l *logBuf) find(level, msg, file string) []map[string]any {
	var out []map[string]any
	for _, r := range l.records() {
		if r["level"] == level && r["msg"] == msg && r["file"] == file {
			out = append(out, r)
		}
	}
	return out
}

// rawClient speaks TFTP by hand, for what pin/tftp's client cannot do: stall, drop, send
// ERROR after an OACK, look at error codes.
type rawClient struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr
	peer   *net.UDPAddr // the transfer's TID, from the first answer
}

func (ts *testServer) raw() *rawClient {
	ts.t.Helper()
	return ts.rawFrom(net.IPv4(127, 0, 0, 1))
}

// rawFrom is raw from another loopback address, such as 127.0.0.2: another host to the server.
func (ts *testServer) rawFrom(ip net.IP) *rawClient {
	ts.t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { conn.Close() })
	return &rawClient{t: ts.t, conn: conn, server: ts.Addr().(*net.UDPAddr)}
}

func (c *rawClient) addr() string { return c.conn.LocalAddr().String() }

func (c *rawClient) send(pkt []byte) {
	c.t.Helper()
	to := c.server
	if c.peer != nil {
		to = c.peer
	}
	if _, err := c.conn.WriteToUDP(pkt, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet within d, or nil on timeout.
func (c *rawClient) recv(d time.Duration) []byte {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.conn.ReadFromUDP(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if c.peer == nil {
		c.peer = from
	}
	return buf[:n]
}

func (c *rawClient) mustRecv(d time.Duration) []byte {
	c.t.Helper()
	p := c.recv(d)
	if p == nil {
		c.t.Fatalf("no packet within %v", d)
	}
	return p
}

func rrq(name string, opts ...string) []byte { return req(opRRQ, name, "octet", opts...) }

func req(op uint16, name, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, op)
	for _, s := range append([]string{name, mode}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

func ack(n uint16) []byte { return binary.BigEndian.AppendUint16([]byte{0, opACK}, n) }

func opcode(p []byte) uint16 { return binary.BigEndian.Uint16(p) }

// dataBlock returns the block number and payload of a DATA packet, failing on anything else.
func dataBlock(t *testing.T, p []byte) (uint16, []byte) {
	t.Helper()
	if len(p) < 4 || opcode(p) != opDATA {
		t.Fatalf("want DATA, got %q", p)
	}
	return binary.BigEndian.Uint16(p[2:]), p[4:]
}

// wantError checks that p is an ERROR with the given code and returns its message.
func wantError(t *testing.T, p []byte, code uint16) string {
	t.Helper()
	c, msg, ok := parseError(p)
	if !ok || c != code {
		t.Fatalf("want ERROR code %d, got %q", code, p)
	}
	return msg
}

// writeRandom writes n random bytes to dir/name and returns them.
func writeRandom(t testing.TB, dir, name string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }
