package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imaged/imaged/internal/config"
)

// tlsDaemon serves a config with the HTTPS listener on (its default) in dir, both listeners on
// 127.0.0.1:0.
func tlsDaemon(t *testing.T, dir string) (*daemon, func()) {
	t.Helper()
	path := filepath.Join(dir, "imaged.yaml")
	err := os.WriteFile(path, []byte(fmt.Sprintf(`version: 1
state_dir: %s/state
http:
  listen: "127.0.0.1:0"
  public_url: "http://127.0.0.1:1"
  tls: {listen: "127.0.0.1:0", public_url: "https://127.0.0.1:2"}
api: {tokens: [{name: dash, scope: read, sha256: %s}]}
tftp: {enabled: false}
boot: {assets_dir: %s/boot, ipxe_dir: %s/ipxe}
machines:
  - {id: ms1-c1n1, macs: ["52:54:00:99:00:11"], boot: agent}
`, dir, testTokenHash, dir, dir)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755)
	for _, f := range []string{"undionly.kpxe", "ipxe.efi"} {
		os.WriteFile(filepath.Join(dir, "ipxe", f), []byte(f), 0o644)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			d.close()
		})
	}
	t.Cleanup(stop)
	return d, stop
}

func fetch(t *testing.T, c *http.Client, method, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Finding 5: tokens, plans and results never cross in clear. The API, the agent API and images
// answer on the plain listener only with an error naming the https URL; over HTTPS (TLS 1.2 or
// later, with the certificate imaged made for itself) they are served; the agent's script sends
// it to the https URL with the certificate's pin; the certificate is made once and kept.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	d, stop := tlsDaemon(t, dir)
	plain := "http://" + d.httpLn.Addr().String()
	for _, p := range []string{"/api/v1/machines", "/agent/v1/plan", "/agent/v1/hello", "/images/" + strings.Repeat("0", 64) + "/blob"} {
		code, body := fetch(t, http.DefaultClient, "GET", plain+p, testToken)
		if code != http.StatusForbidden || !strings.Contains(body, "is served over HTTPS only") || !strings.Contains(body, "use https://127.0.0.1:2"+p) {
			t.Errorf("plain %s: %d %s", p, code, body)
		}
	}
	// What firmware and a booted OS fetch stays on the plain listener.
	code, script := fetch(t, http.DefaultClient, "GET", plain+"/boot/52:54:00:99:00:11.ipxe", "")
	if want := "imaged.server=https://127.0.0.1:2 imaged.tls_sha256=" + d.cert.Fingerprint() + " imaged.token="; code != 200 || !strings.Contains(script, want) ||
		!strings.Contains(script, "kernel http://127.0.0.1:1/boot/assets/vmlinuz") {
		t.Errorf("script: %d\n%s\nwant %s", code, script, want)
	}
	if code, body := fetch(t, http.DefaultClient, "GET", plain+"/api/v1/metadata", ""); code == http.StatusForbidden || strings.Contains(body, "HTTPS only") {
		t.Errorf("metadata over plain HTTP: %d %s", code, body)
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if code, _ := fetch(t, http.DefaultClient, "GET", plain+p, ""); code != 200 {
			t.Errorf("plain %s: %d", p, code)
		}
	}

	pool := x509.NewCertPool()
	pool.AddCert(d.cert.Leaf)
	secure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	https := "https://" + d.httpsLn.Addr().String()
	if code, body := fetch(t, secure, "GET", https+"/api/v1/machines", testToken); code != 200 || !strings.Contains(body, `"id": "ms1-c1n1"`) {
		t.Errorf("API over HTTPS: %d %s", code, body)
	}
	if code, body := fetch(t, secure, "GET", https+"/agent/v1/plan", "forged"); code != http.StatusBadRequest && code != http.StatusForbidden || strings.Contains(body, "HTTPS only") {
		t.Errorf("agent API over HTTPS: %d %s", code, body)
	}
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get(https + "/healthz"); err == nil {
		t.Error("a TLS 1.1 client was served")
	}

	st, err := os.Stat(filepath.Join(dir, "state", "tls", "key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the self-signed key: %v %v, want mode 0600", err, st.Mode())
	}
	// A restart serves the same certificate: the pins handed out stay true.
	stop()
	d2, _ := tlsDaemon(t, dir)
	if d2.cert.Fingerprint() != d.cert.Fingerprint() {
		t.Errorf("the certificate changed across a restart: %s, then %s", d.cert.Fingerprint(), d2.cert.Fingerprint())
	}
}
