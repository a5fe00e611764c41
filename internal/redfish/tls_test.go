package redfish

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
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

	"github.com/imaged/imaged/internal/power"
)

// tlsBMC serves the iLO 5 fake over TLS on a kernel-chosen port and counts connections.
func tlsBMC(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
	srv := httptest.NewUnstartedServer(f)
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func tlsConfigFor(t *testing.T, srv *httptest.Server, mod func(*Config)) Config {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Endpoint = u
	cfg.Retries = 3
	cfg.BackoffBase = time.Millisecond
	cfg.Timeout = 5 * time.Second
	mod(&cfg)
	return cfg
}

func writePEM(t *testing.T, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// otherCA is a CA that did not sign the test server's certificate.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config, *httptest.Server)
		ok   bool
	}{
		{"system roots refuse a self-signed BMC", func(*Config, *httptest.Server) {}, false},
		{"its CA file", func(c *Config, s *httptest.Server) { c.CAFile = writePEM(t, s.Certificate().Raw) }, true},
		{"its CA pool", func(c *Config, s *httptest.Server) {
			c.CA = x509.NewCertPool()
			c.CA.AddCert(s.Certificate())
		}, true},
		{"a wrong CA", func(c *Config, s *httptest.Server) { c.CAFile = writePEM(t, otherCA(t)) }, false},
		{"pinned fingerprint", func(c *Config, s *httptest.Server) { c.Fingerprint = Fingerprint(s.Certificate().Raw) }, true},
		{"pinned fingerprint, openssl format", func(c *Config, s *httptest.Server) {
			fp := strings.ToUpper(Fingerprint(s.Certificate().Raw))
			var parts []string
			for i := 0; i < len(fp); i += 2 {
				parts = append(parts, fp[i:i+2])
			}
			c.Fingerprint = "sha256:" + strings.Join(parts, ":")
		}, true},
		{"wrong fingerprint", func(c *Config, s *httptest.Server) { c.Fingerprint = Fingerprint(otherCA(t)) }, false},
		{"insecure", func(c *Config, s *httptest.Server) { c.Insecure = true }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, conns := tlsBMC(t)
			cfg := tlsConfigFor(t, srv, func(c *Config) { tc.mod(c, srv) })
			c, err := New(cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Systems(t.Context())
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Close(t.Context()); err != nil {
					t.Errorf("Close: %v", err)
				}
				return
			}
			if !errors.Is(err, power.ErrUnreachable) {
				t.Fatalf("Systems = %v, want ErrUnreachable", err)
			}
			var cve *tls.CertificateVerificationError
			if !errors.As(err, &cve) && !errors.Is(err, errPinMismatch) {
				t.Errorf("error %v does not say the certificate was refused", err)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections: a refused certificate must not be retried", n)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ep := &url.URL{Scheme: "https", Host: "10.0.0.5"}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no endpoint", func(c *Config) { c.Endpoint = nil }},
		{"ftp", func(c *Config) { c.Endpoint = &url.URL{Scheme: "ftp", Host: "x"} }},
		{"user info", func(c *Config) {
			c.Endpoint = &url.URL{Scheme: "https", Host: "x", User: url.UserPassword("root", testPass)}
		}},
		{"path", func(c *Config) { c.Endpoint = &url.URL{Scheme: "https", Host: "x", Path: "/rest/v1"} }},
		{"no password", func(c *Config) { c.Password = "" }},
		{"insecure and pin", func(c *Config) { c.Insecure, c.Fingerprint = true, strings.Repeat("ab", 32) }},
		{"pin and CA", func(c *Config) { c.CAFile, c.Fingerprint = "/etc/ssl/ca.pem", strings.Repeat("ab", 32) }},
		{"short pin", func(c *Config) { c.Fingerprint = "abcd" }},
		{"missing CA file", func(c *Config) { c.CAFile = filepath.Join(t.TempDir(), "none.pem") }},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }},
	} {
		cfg := testConfig()
		cfg.Endpoint = ep
		tc.mod(&cfg)
		_, err := New(cfg, nil, nil)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if strings.Contains(err.Error(), testPass) {
			t.Errorf("%s: the error shows the password: %v", tc.name, err)
		}
	}
	cfg := testConfig()
	cfg.Name = ""
	cfg.Endpoint = &url.URL{Scheme: "https", Host: "10.0.0.5", Path: "/redfish/v1/"}
	c, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg
	if got.Name != "10.0.0.5" || got.Timeout != DefaultTimeout || got.Retries != DefaultRetries ||
		got.MaxConcurrent != DefaultMaxConcurrent || got.BreakerThreshold != DefaultBreakerThreshold {
		t.Errorf("defaults not applied: %+v", got)
	}
}
