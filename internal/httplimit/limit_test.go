package httplimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testServer serves, on a real socket on 127.0.0.1:0 behind l (limit off: no Limiter at all,
// as main had it), POST /body (reads the body; 408 when its deadline cut it), GET /blob (a file,
// through http.ServeContent), GET /events (a stream: a 4 KiB comment every 2 ms) and GET /ok.
func testServer(t *testing.T, l *Limiter, blobSize int) string {
	t.Helper()
	blob := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(blob, make([]byte, blobSize), 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /body", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			http.Error(w, "body too slow", http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "%d bytes", len(b))
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(blob)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "blob", time.Time{}, f)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		tick := ": " + strings.Repeat("tick", 1024) + "\n\n"
		for {
			if _, err := io.WriteString(w, tick); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = mux
	if l != nil {
		ln = l.Listen(ln)
		h = l.Handler(func(r *http.Request) Class {
			switch r.URL.Path {
			case "/blob":
				return Transfer
			case "/events":
				return Stream
			}
			return Request
		}, mux)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	return ln.Addr().String()
}

func newLimiter(t *testing.T, c Config) *Limiter {
	t.Helper()
	for _, f := range []struct {
		v *int
		d int
	}{{&c.MaxConns, 100}, {&c.MaxConnsPerClient, 100}, {&c.MaxStreams, 100}, {&c.MaxStreamsPerClient, 100}} {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	for _, d := range []*time.Duration{&c.ReadTimeout, &c.WriteTimeout, &c.TransferStall} {
		if *d == 0 {
			*d = time.Minute
		}
	}
	l, err := New(c, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func refused(l *Limiter, reason string) int {
	return int(testutil.ToFloat64(l.refused.WithLabelValues(reason)))
}

// dial connects to addr from the loopback address from (127.0.0.x): each is another client.
func dial(t *testing.T, from, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// halfSent starts a POST whose body never ends: 1 byte of 100.
func halfSent(t *testing.T, from, addr string) *net.TCPConn {
	c := dial(t, from, addr)
	fmt.Fprintf(c, "POST /body HTTP/1.1\r\nHost: imaged\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	return c
}

// closedByServer reports whether the server closed c (EOF or reset) within wait.
func closedByServer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 512))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func getOK(t *testing.T, from, addr string) error {
	t.Helper()
	c := dial(t, from, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ok HTTP/1.1\r\nHost: imaged\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET /ok from %s: %s", from, resp.Status)
	}
	return nil
}

// The attack of issue 11, finding 6: a body trickled one byte at a time was held as long as
// the client liked. It is cut at ReadTimeout with 408, and counted.
func TestTrickledBodyIsCut(t *testing.T) {
	l := newLimiter(t, Config{ReadTimeout: 300 * time.Millisecond})
	addr := testServer(t, l, 1)
	c := halfSent(t, "127.0.0.1", addr)
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one more byte every 50 ms: 100 bytes would take 5 s
		for i := 0; i < 99; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(4 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("no answer to the trickled body within %v: %v", took, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || took > 2*time.Second {
		t.Errorf("the trickled body got %s after %v; want 408 at the 300 ms read deadline", resp.Status, took.Round(time.Millisecond))
	}
	if n := refused(l, ReasonReadTimeout); n != 1 {
		t.Errorf("read_timeout refusals = %d, want 1", n)
	}
	// An honest body is read as before.
	resp2, err := http.Post("http://"+addr+"/body", "application/json", strings.NewReader(`{"ok": true}`))
	if err != nil || resp2.StatusCode != 200 {
		t.Fatalf("a whole body: %v %v", resp2, err)
	}
	resp2.Body.Close()
}

// The attack of issue 11, finding 6: 400 half-sent bodies from one host held 400 goroutines and
// descriptors. Past MaxConnsPerClient the host's connections are closed at once and counted,
// and another client is served all the while.
func TestHalfSentBodiesPerClient(t *testing.T) {
	const perClient, attack = 8, 40
	l := newLimiter(t, Config{MaxConnsPerClient: perClient})
	addr := testServer(t, l, 1)
	conns := make([]*net.TCPConn, attack)
	for i := range conns {
		conns[i] = halfSent(t, "127.0.0.1", addr)
	}
	var wg sync.WaitGroup
	closed := make([]bool, attack)
	for i, c := range conns {
		wg.Go(func() { closed[i] = closedByServer(c, time.Second) })
	}
	wg.Wait()
	n := 0
	for _, c := range closed {
		if c {
			n++
		}
	}
	if n != attack-perClient {
		t.Errorf("%d of %d half-sent bodies from one host were refused, want %d (the host may hold %d)", n, attack, attack-perClient, perClient)
	}
	if got := refused(l, ReasonClientConnections); got != attack-perClient {
		t.Errorf("client_connections refusals = %d, want %d", got, attack-perClient)
	}
	if got := testutil.ToFloat64(l.connections); got != perClient {
		t.Errorf("imaged_http_connections = %v, want %d", got, perClient)
	}
	// Another client is served while the first holds its share.
	if err := getOK(t, "127.0.0.2", addr); err != nil {
		t.Errorf("another client was not served: %v", err)
	}
	// The host's held connections give their slots back when they go.
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(l.connections) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("imaged_http_connections = %v after every client left", testutil.ToFloat64(l.connections))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := getOK(t, "127.0.0.1", addr); err != nil {
		t.Errorf("the host is not served again after its connections closed: %v", err)
	}
}

// MaxConns bounds the connections of all clients together.
func TestTotalConnections(t *testing.T) {
	l := newLimiter(t, Config{MaxConns: 4})
	addr := testServer(t, l, 1)
	var held []*net.TCPConn
	for i := 2; i < 6; i++ {
		held = append(held, halfSent(t, fmt.Sprintf("127.0.0.%d", i), addr))
	}
	for _, c := range held {
		if closedByServer(c, 200*time.Millisecond) {
			t.Fatal("a connection within the limit was closed")
		}
	}
	if c := halfSent(t, "127.0.0.6", addr); !closedByServer(c, time.Second) {
		t.Error("a fifth connection was kept over a limit of 4")
	}
	if got := refused(l, ReasonConnections); got != 1 {
		t.Errorf("connections refusals = %d, want 1", got)
	}
}

func openStream(t *testing.T, from, addr string) (*http.Response, net.Conn) {
	t.Helper()
	c := dial(t, from, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: imaged\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("stream from %s: %v", from, err)
	}
	return resp, c
}

// Event streams beyond the per-client and the total cap get 503 with a JSON error, and count.
func TestEventStreamCaps(t *testing.T) {
	l := newLimiter(t, Config{MaxStreams: 3, MaxStreamsPerClient: 2})
	addr := testServer(t, l, 1)
	var open []net.Conn
	for _, from := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		resp, c := openStream(t, from, addr)
		if resp.StatusCode != 200 {
			t.Fatalf("stream from %s within the limits: %s", from, resp.Status)
		}
		open = append(open, c)
	}
	for _, tc := range []struct{ from, reason, want string }{
		{"127.0.0.1", ReasonClientStreams, "from 127.0.0.1"},
		{"127.0.0.3", ReasonStreams, "the server's limit"},
	} {
		resp, _ := openStream(t, tc.from, addr)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/json" ||
			!strings.Contains(string(body), `"error":"too many event streams open `) || !strings.Contains(string(body), tc.want) || resp.Header.Get("Retry-After") == "" {
			t.Errorf("stream from %s over the limit: %s %q %s", tc.from, resp.Status, resp.Header, body)
		}
		if got := refused(l, tc.reason); got != 1 {
			t.Errorf("%s refusals = %d, want 1", tc.reason, got)
		}
	}
	if got := testutil.ToFloat64(l.streams); got != 3 {
		t.Errorf("imaged_http_event_streams = %v, want 3", got)
	}
	// A stream that ends gives its slot back.
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ := openStream(t, "127.0.0.1", addr)
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed stream was not given back: %s", resp.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// smallReceiveBuffer makes a client whose socket fills after a few KiB, so that a server
// writing to it blocks as soon as the client stops reading.
func smallReceiveBuffer(t *testing.T, addr string) net.Conn {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A client that asks for a blob and stops reading is cut TransferStall after its last byte.
func TestStalledTransferIsCut(t *testing.T) {
	l := newLimiter(t, Config{TransferStall: 300 * time.Millisecond})
	addr := testServer(t, l, 64<<20)
	c := smallReceiveBuffer(t, addr)
	fmt.Fprintf(c, "GET /blob HTTP/1.1\r\nHost: imaged\r\n\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for refused(l, ReasonWriteTimeout) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a transfer nobody reads was not cut within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.Copy(io.Discard, c)
	if n >= 64<<20 {
		t.Errorf("the stalled client still got the whole blob (%d bytes)", n)
	}
}

// A transfer that takes longer than TransferStall in all, while bytes flow, is not cut: the
// deadline moves on with every chunk (and the chunks still go out with sendfile).
func TestFlowingTransferCompletes(t *testing.T) {
	const size = 8 << 20
	l := newLimiter(t, Config{TransferStall: 250 * time.Millisecond})
	addr := testServer(t, l, size)
	c := smallReceiveBuffer(t, addr)
	fmt.Fprintf(c, "GET /blob HTTP/1.1\r\nHost: imaged\r\nConnection: close\r\n\r\n")
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	buf := make([]byte, 256<<10)
	for {
		k, err := io.ReadFull(resp.Body, buf)
		n += int64(k)
		if err != nil {
			break
		}
		time.Sleep(15 * time.Millisecond) // about 16 MiB/s: 8 MiB take 0.5 s, twice the stall
	}
	if took := time.Since(start); n != size || took < 300*time.Millisecond {
		t.Errorf("got %d of %d bytes in %v (the test needs the transfer to outlast the stall)", n, size, took)
	}
	if got := refused(l, ReasonWriteTimeout); got != 0 {
		t.Errorf("write_timeout refusals = %d for a transfer that kept moving", got)
	}
}

// A stream whose client stops reading is cut at its next write past WriteTimeout.
func TestStalledStreamIsCut(t *testing.T) {
	l := newLimiter(t, Config{WriteTimeout: 200 * time.Millisecond})
	addr := testServer(t, l, 1)
	c := smallReceiveBuffer(t, addr)
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: imaged\r\n\r\n")
	deadline := time.Now().Add(20 * time.Second)
	for refused(l, ReasonWriteTimeout) == 0 || testutil.ToFloat64(l.streams) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a stream nobody reads was not cut (write_timeout %d, streams %v)", refused(l, ReasonWriteTimeout), testutil.ToFloat64(l.streams))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewRefusesZeroLimits(t *testing.T) {
	if _, err := New(Config{MaxConns: 1}, nil); err == nil {
		t.Error("New accepted zero limits")
	}
	if _, err := New(Defaults, nil); err != nil {
		t.Errorf("the defaults: %v", err)
	}
}
