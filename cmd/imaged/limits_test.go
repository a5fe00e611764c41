package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/httplimit"
)

// limitsDaemon serves a config with small http.limits, DHCP and TFTP off, on 127.0.0.1:0.
func limitsDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "imaged.yaml")
	err := os.WriteFile(path, []byte(fmt.Sprintf(`version: 1
state_dir: %s/state
http:
  listen: "127.0.0.1:0"
  public_url: "http://127.0.0.1:1"
  tls: {listen: "127.0.0.1:0", public_url: "https://127.0.0.1:1"}
  limits: {connections_per_client: 4, event_streams_per_client: 1, read_timeout: 300ms}
api: {anonymous_read: true}
tftp: {enabled: false}
boot: {assets_dir: %s/boot, ipxe_dir: %s/ipxe}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"], boot: agent}
`, dir, dir, dir)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755)
	for _, f := range []string{"undionly.kpxe", "ipxe.efi"} {
		os.WriteFile(filepath.Join(dir, "ipxe", f), []byte(f), 0o644)
	}
	d := serveConfig(t, path)
	return d, d.httpsLn.Addr().String()
}

// dialFrom connects to the daemon's HTTPS listener at addr from the loopback address from
// (127.0.0.x: each is another client), trusting the daemon's certificate.
func dialFrom(t *testing.T, d *daemon, from, addr string) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(d.cert.Leaf)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	t.Cleanup(func() { tc.Close() })
	return tc
}

// metrics reads /metrics into a map of series to value.
func metrics(t *testing.T, d *daemon) map[string]string {
	t.Helper()
	// From an address of its own: the test's other clients may still hold their share.
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}).DialContext}}
	resp, err := hc.Get("http://" + d.httpLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	hc.CloseIdleConnections()
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.LastIndexByte(l, ' '); i > 0 && !strings.HasPrefix(l, "#") {
			out[l[:i]] = l[i+1:]
		}
	}
	return out
}

// The attacks of issue 11, finding 6, against `imaged serve` as it is wired, on its HTTPS
// listener (where the agent API is): a trickled agent hello is cut at http.limits.read_timeout with 408; half-sent bodies from one host beyond
// connections_per_client are refused while another host is served; a second event stream from
// one host gets 503. Each refusal is in imaged_http_refused_total.
func TestServeBoundsConnections(t *testing.T) {
	d, addr := limitsDaemon(t)

	c := dialFrom(t, d, "127.0.0.1", addr)
	fmt.Fprintf(c, "POST /agent/v1/hello HTTP/1.1\r\nHost: imaged\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	stop := make(chan struct{})
	go func() {
		for {
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
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	close(stop)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 2*time.Second {
		t.Fatalf("trickled hello: %v %v after %v; want 408 at the 300 ms read timeout", resp, err, time.Since(start))
	}
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), `"error": "the body did not arrive in time`) {
		t.Errorf("408 body: %s", body)
	}

	var held []net.Conn
	for range 4 {
		c := dialFrom(t, d, "127.0.0.1", addr)
		fmt.Fprintf(c, "POST /agent/v1/hello HTTP/1.1\r\nHost: imaged\r\nContent-Length: 100\r\n\r\n{")
		held = append(held, c)
	}
	refusedConns := 0
	for range 10 {
		c := dialFrom(t, d, "127.0.0.1", addr)
		fmt.Fprintf(c, "POST /agent/v1/hello HTTP/1.1\r\nHost: imaged\r\nContent-Length: 100\r\n\r\n{")
		c.SetReadDeadline(time.Now().Add(time.Second))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			refusedConns++
		}
	}
	if refusedConns != 10 {
		t.Errorf("%d of 10 connections beyond the host's 4 were refused", refusedConns)
	}
	// Another host is served meanwhile.
	other := dialFrom(t, d, "127.0.0.2", addr)
	fmt.Fprintf(other, "GET /healthz HTTP/1.1\r\nHost: imaged\r\nConnection: close\r\n\r\n")
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(other), nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("another host while the first holds its share: %v %v", resp, err)
	}
	for _, c := range held {
		c.Close()
	}

	s1 := dialFrom(t, d, "127.0.0.3", addr)
	fmt.Fprintf(s1, "GET /api/v1/events HTTP/1.1\r\nHost: imaged\r\n\r\n")
	s1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(s1), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first event stream: %v %v", resp, err)
	}
	s2 := dialFrom(t, d, "127.0.0.3", addr)
	fmt.Fprintf(s2, "GET /api/v1/events HTTP/1.1\r\nHost: imaged\r\n\r\n")
	s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(s2), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second event stream from one host: %v %v", resp, err)
	}
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), `"error":"too many event streams open from 127.0.0.3`) {
		t.Errorf("503 body: %s", body)
	}

	m := metrics(t, d)
	for reason, want := range map[string]string{"read_timeout": "1", "client_connections": "10", "client_sse": "1", "connections": "0", "sse": "0", "write_timeout": "0"} {
		if got := m[`imaged_http_refused_total{reason="`+reason+`"}`]; got != want {
			t.Errorf("imaged_http_refused_total{reason=%q} = %s, want %s", reason, got, want)
		}
	}
}

// The config's defaults for http.limits are the limiter's documented defaults.
func TestLimitsDefaults(t *testing.T) {
	cfg, err := config.Parse("m.yaml", []byte("version: 1\nhttp: {public_url: http://127.0.0.1:8080}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := limitsConfig(cfg.HTTP.Limits); got != httplimit.Defaults {
		t.Errorf("config defaults %+v, httplimit.Defaults %+v", got, httplimit.Defaults)
	}
}

// The daemon serves the dashboard at / over HTTPS, links to it from the plain listener, and
// counts the dashboard's event stream among http.limits' streams (one per client here).
func TestDashboardServed(t *testing.T) {
	d, addr := limitsDaemon(t)
	get := func(c net.Conn, path string) (*http.Response, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: imaged\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if resp.Header.Get("Content-Type") == "text/event-stream" {
			return resp, ""
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	c := dialFrom(t, d, "127.0.0.5", addr)
	if resp, body := get(c, "/"); resp.StatusCode != 200 || !strings.Contains(body, `data-machine="ms1-c1n1"`) {
		t.Errorf("GET / over HTTPS: %d\n%s", resp.StatusCode, body)
	}
	plain, err := net.Dial("tcp", d.httpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if resp, body := get(plain, "/"); resp.StatusCode != 200 || !strings.Contains(body, `href="https://127.0.0.1:1/"`) {
		t.Errorf("GET / over plain HTTP: %d\n%s", resp.StatusCode, body)
	}
	s1 := dialFrom(t, d, "127.0.0.6", addr)
	if resp, _ := get(s1, "/ui/events?view=chassis"); resp.StatusCode != 200 {
		t.Fatalf("the dashboard's stream: %d", resp.StatusCode)
	}
	s2 := dialFrom(t, d, "127.0.0.6", addr)
	if resp, _ := get(s2, "/ui/events?view=jobs"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a second stream from one host: %d, want 503", resp.StatusCode)
	}
}
