package servercert

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The certificate made at the first start is kept: a restart serves the same one (agents pin its
// fingerprint), and its key is readable by imaged's user alone.
func TestSelfSignedIsKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	c1, made, err := LoadOrCreate(dir, []string{"10.99.0.1", "imaged.lab"}, now)
	if err != nil || made == "" {
		t.Fatalf("first start: %v (made %q)", err, made)
	}
	st, err := os.Stat(filepath.Join(dir, KeyName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	c2, made, err := LoadOrCreate(dir, []string{"10.99.0.1"}, now.Add(24*time.Hour))
	if err != nil || made != "" {
		t.Fatalf("restart: %v (made %q)", err, made)
	}
	if c1.Fingerprint() != c2.Fingerprint() || len(c1.Fingerprint()) != 64 {
		t.Errorf("fingerprint changed across a restart: %s, then %s", c1.Fingerprint(), c2.Fingerprint())
	}
	pemBytes, _ := os.ReadFile(filepath.Join(dir, CertName))
	if sum := sha256.Sum256(c2.Leaf.Raw); sum != c2.SHA256 || !strings.Contains(string(pemBytes), "BEGIN CERTIFICATE") {
		t.Error("SHA256 is not the leaf's")
	}
	// It verifies as its own root for the names it was made for (what curl --cacert does).
	pool := x509.NewCertPool()
	pool.AddCert(c2.Leaf)
	for _, name := range []string{"10.99.0.1", "imaged.lab"} {
		if _, err := c2.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if c2.Leaf.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("key algorithm %v: iPXE before 2024 verifies only RSA", c2.Leaf.PublicKeyAlgorithm)
	}
	cfg := c2.ServerConfig()
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "http/1.1" {
		t.Errorf("server config: %+v", cfg)
	}
}

// A kept certificate that does not name the server's address, or is about to expire, is made
// anew, and the reason is given.
func TestSelfSignedRenewed(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c1, _, err := LoadOrCreate(dir, []string{"10.99.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	c2, made, err := LoadOrCreate(dir, []string{"10.99.0.2"}, now)
	if err != nil || !strings.Contains(made, "does not name 10.99.0.2") || c2.Fingerprint() == c1.Fingerprint() {
		t.Errorf("new address: %v, made %q", err, made)
	}
	c3, made, err := LoadOrCreate(dir, []string{"10.99.0.2"}, now.Add(lifetime-renewal/2))
	if err != nil || !strings.Contains(made, "expires") || c3.Fingerprint() == c2.Fingerprint() {
		t.Errorf("near expiry: %v, made %q", err, made)
	}
	os.WriteFile(filepath.Join(dir, KeyName), []byte("garbage"), 0o600)
	if _, made, err := LoadOrCreate(dir, []string{"10.99.0.2"}, now); err != nil || !strings.Contains(made, "unusable") {
		t.Errorf("broken key: %v, made %q", err, made)
	}
}

func TestLoadOperatorFiles(t *testing.T) {
	dir := t.TempDir()
	made, _, err := LoadOrCreate(dir, []string{"imaged.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(filepath.Join(dir, CertName), filepath.Join(dir, KeyName))
	if err != nil || c.Fingerprint() != made.Fingerprint() {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "nope.pem"), filepath.Join(dir, KeyName)); err == nil || !strings.Contains(err.Error(), "nope.pem") {
		t.Errorf("a missing file: %v", err)
	}
}
