package vbmc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

func tlsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the CA file")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func TestGenerateCA(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile, err := vbmc.GenerateCA(dir, []string{"127.0.0.1", "bmc.lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{caFile: 0o644, certFile: 0o644, keyFile: 0o600} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", filepath.Base(f), st.Mode().Perm(), mode)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	ca := readCert(t, caFile)
	cert := readCert(t, certFile)
	if !ca.IsCA || cert.IsCA {
		t.Fatal("CA/leaf flags wrong")
	}
	for _, c := range []*x509.Certificate{ca, cert} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", c.Subject.CommonName, c.PublicKey)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range []string{"127.0.0.1", "bmc.lab.example"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "10.0.0.1", Roots: roots}); err == nil {
		t.Error("certificate valid for a host it was not made for")
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatalf("key pair: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err == nil {
		t.Error("the CA key was written")
	}
	if _, _, _, err := vbmc.GenerateCA(dir, nil); err == nil {
		t.Error("GenerateCA without hosts succeeded")
	}
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHTTPS(t *testing.T) {
	ts, _ := startTLSServer(t, threeBlades())
	if got := ts.URL(); got[:8] != "https://" {
		t.Fatalf("URL %s", got)
	}
	if sys := ts.get("/redfish/v1/Systems"); sys["Members@odata.count"] != 3.0 {
		t.Fatalf("over TLS: %v", sys)
	}
	// A client that does not trust the lab CA is refused by its own TLS stack.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(ts.URL() + "/redfish/v1/"); err == nil {
		t.Error("a client without the CA connected")
	}
	// And plain HTTP to the TLS port gets nowhere.
	if r, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + ts.Addr().String() + "/redfish/v1/"); err == nil && r.StatusCode == 200 {
		t.Error("plain HTTP answered on the TLS listener")
	}
}
