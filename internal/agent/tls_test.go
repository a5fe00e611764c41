package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/blockcopy"
)

// selfSigned makes a certificate for 127.0.0.1, like the one imaged makes for itself.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imaged"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves h over TLS 1.2+ with cert on 127.0.0.1:0 and counts the requests that
// reached it.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) (*url.URL, *atomic.Int32) {
	u, n, _ := tlsServerCounting(t, cert, h)
	return u, n
}

// tlsServerCounting is tlsServer, also counting the TLS handshakes it was asked for.
func tlsServerCounting(t *testing.T, cert tls.Certificate, h http.Handler) (*url.URL, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	var n, hs atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { hs.Add(1); return nil, nil }}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u, &n, &hs
}

// TestWrongCertificateNotRetried: a blob server with another certificate is refused at the first
// handshake, and the copy does not try again, however many retries it has: the certificate will
// not change between attempts.
func TestWrongCertificateNotRetried(t *testing.T) {
	pin := sha256.Sum256(selfSigned(t).Certificate[0])
	impostor, reached, handshakes := tlsServerCounting(t, selfSigned(t), imagedLike())
	cfg, err := ParseCmdline("imaged.server=" + impostor.String() + " imaged.tls_sha256=" + hexString(pin[:]) + " imaged.token=tok imaged.mac=52:54:00:99:00:11")
	if err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	b := images.NewBuilder()
	b.Write(blob)
	m, _ := b.Manifest()
	src := &blockcopy.HTTPSource{URL: impostor.JoinPath("images/x/blob"), Client: cfg.BlobClient()}
	disk, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	_, err = blockcopy.Copy(context.Background(), disk, src, m, blockcopy.Options{Retries: 8, ChecksumRetries: 3})
	if !errors.Is(err, ErrCertificate) {
		t.Fatalf("copy from a server with another certificate: %v", err)
	}
	if n := handshakes.Load(); n != 1 || reached.Load() != 0 {
		t.Errorf("%d handshakes, %d requests; want 1 and 0: a wrong certificate is not retried", n, reached.Load())
	}
}

var blob = bytes.Repeat([]byte("imaged"), 1<<16)

func imagedLike() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/agent/v1/hello":
			io.WriteString(w, `{"machine_id":"ms1-c1n1","action":"wait"}`)
		case "/agent/v1/plan":
			io.WriteString(w, `{"action":"wait"}`)
		case "/images/x/blob":
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		default:
			http.NotFound(w, r)
		}
	})
}

// The agent talks only to the server whose certificate the boot script pinned. A server at
// the same kind of address with another certificate (a machine in the middle, a rogue imaged)
// is refused at the handshake, before the boot token, a plan request or a blob request reaches
// it, with an error that says what was presented and what was pinned.
func TestAgentRefusesAnotherCertificate(t *testing.T) {
	cert := selfSigned(t)
	pin := sha256.Sum256(cert.Certificate[0])
	imaged, _ := tlsServer(t, cert, imagedLike())
	impostor, reached := tlsServer(t, selfSigned(t), imagedLike())

	for _, srv := range []struct {
		name string
		url  *url.URL
		ok   bool
	}{{"imaged", imaged, true}, {"impostor", impostor, false}} {
		cfg, err := ParseCmdline("imaged.server=" + srv.url.String() + " imaged.tls_sha256=" + strings.ToUpper(hexColons(pin[:])) + " imaged.token=tok imaged.mac=52:54:00:99:00:11")
		if err != nil {
			t.Fatal(err)
		}
		cfg.HelloTimeout, cfg.HelloAttempt, cfg.HelloBackoff, cfg.HelloBackoffMax = 300*time.Millisecond, 100*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
		cfg.setDefaults()
		check := func(what string, err error) {
			t.Helper()
			switch {
			case srv.ok && err != nil:
				t.Errorf("%s to %s: %v", what, srv.name, err)
			case !srv.ok && !errors.Is(err, ErrCertificate):
				t.Errorf("%s to %s with another certificate: %v, want ErrCertificate", what, srv.name, err)
			case !srv.ok && !strings.Contains(err.Error(), "refusing it") || !srv.ok && !strings.Contains(err.Error(), "imaged.tls_sha256 is "+hexString(pin[:])):
				t.Errorf("%s to %s: the error does not say what was pinned: %v", what, srv.name, err)
			}
		}
		_, err = sendHello(context.Background(), cfg.apiClient(), cfg.Server.JoinPath(HelloPath).String(),
			func() HelloRequest { return HelloRequest{MAC: cfg.MAC.String(), Token: cfg.Token} }, &cfg, slog.New(slog.DiscardHandler))
		check("hello", err)
		w := &worker{cfg: &cfg, client: cfg.apiClient(), log: slog.New(slog.DiscardHandler)}
		check("plan", w.call(context.Background(), "GET", "agent/v1/plan", nil, nil))
		src := &blockcopy.HTTPSource{URL: srv.url.JoinPath("images/x/blob"), Client: cfg.BlobClient()}
		rc, err := src.OpenRange(context.Background(), 0, 512)
		if err == nil {
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, blob[:512]) {
				t.Errorf("blob range from %s: %q", srv.name, got[:16])
			}
		}
		check("blob range", err)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the server with another certificate", n)
	}
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

// hexColons is b as openssl prints a fingerprint: AB:CD:…
func hexColons(b []byte) string {
	h := hex.EncodeToString(b)
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func TestTLSCmdline(t *testing.T) {
	const pin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct{ line, err string }{
		{"imaged.server=https://10.99.0.1:8443 imaged.tls_sha256=" + pin + " imaged.token=t imaged.mac=52:54:00:99:00:11", ""},
		{"imaged.server=https://10.99.0.1:8443 imaged.token=t imaged.mac=52:54:00:99:00:11", "imaged.tls_sha256 is missing"},
		{"imaged.server=http://10.99.0.1:8080 imaged.tls_sha256=" + pin + " imaged.token=t imaged.mac=52:54:00:99:00:11", "is not https"},
		{"imaged.server=https://10.99.0.1:8443 imaged.tls_sha256=abc imaged.token=t imaged.mac=52:54:00:99:00:11", "64 hex digits"},
	} {
		cfg, err := ParseCmdline(c.line)
		switch {
		case c.err == "" && (err != nil || len(cfg.TLSPin) != 32 || cfg.tlsConfig() == nil || cfg.tlsConfig().MinVersion != tls.VersionTLS12):
			t.Errorf("%s: %v %+v", c.line, err, cfg)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want %q", c.line, err, c.err)
		}
	}
}
