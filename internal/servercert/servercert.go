// Package servercert is the certificate of imaged's HTTPS listener: the operator's (a
// certificate and key file from the config), or one imaged makes for itself at its first start
// and keeps in the state directory, so that its SHA-256 fingerprint, which agents pin, stays the
// same across restarts.
//
// The self-made certificate is RSA 2048 because iPXE builds before 2024 verify only RSA
// signatures (ipxe.org/crypto), and an iPXE built to trust this certificate (TRUST=) must be able
// to use it. The package is a leaf; only cmd/imaged imports it.
package servercert

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/imaged/imaged/internal/atomicfile"
)

// Cert is a certificate and its key, ready to serve.
type Cert struct {
	TLS  tls.Certificate
	Leaf *x509.Certificate
	// SHA256 is the SHA-256 of the leaf certificate's DER: what `openssl x509 -fingerprint
	// -sha256` prints, what agents pin (imaged.tls_sha256=) and what iPXE's trust setting takes.
	SHA256 [sha256.Size]byte
}

// Fingerprint is SHA256 as 64 lower-case hex digits.
func (c *Cert) Fingerprint() string { return hex.EncodeToString(c.SHA256[:]) }

// ServerConfig is the TLS configuration of a listener serving c: TLS 1.2 and 1.3 only (iPXE
// speaks at most 1.2), and HTTP/1.1 only, so that one request is one connection and the
// per-connection limits and deadlines of internal/httplimit hold.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.TLS},
		NextProtos:   []string{"http/1.1"},
	}
}

// Load reads an operator's certificate (PEM; intermediates may follow the leaf) and key.
func Load(certFile, keyFile string) (*Cert, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("servercert: %w", err)
	}
	return newCert(kp)
}

func newCert(kp tls.Certificate) (*Cert, error) {
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("servercert: %w", err)
	}
	kp.Leaf = leaf
	return &Cert{TLS: kp, Leaf: leaf, SHA256: sha256.Sum256(leaf.Raw)}, nil
}

// Names of the files LoadOrCreate keeps in its directory.
const (
	CertName = "cert.pem"
	KeyName  = "key.pem"
)

// MadeFirst is LoadOrCreate's reason when no certificate was kept yet (the first start).
const MadeFirst = "none kept yet"

// lifetime of a self-made certificate, and how long before its end it is made anew.
const (
	lifetime = 10 * 365 * 24 * time.Hour
	renewal  = 30 * 24 * time.Hour
)

// LoadOrCreate returns the certificate kept in dir if it is valid at now for another 30 days
// and names every one of hosts (IP addresses or DNS names); otherwise it makes a new
// self-signed one for hosts, writes it there (the key mode 0600, each file atomically) and says
// why in made. made is "" when the kept certificate was taken.
func LoadOrCreate(dir string, hosts []string, now time.Time) (c *Cert, made string, err error) {
	certFile, keyFile := filepath.Join(dir, CertName), filepath.Join(dir, KeyName)
	c, err = Load(certFile, keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		made = MadeFirst
	case err != nil:
		made = fmt.Sprintf("the kept one is unusable (%v)", err)
	case now.Add(renewal).After(c.Leaf.NotAfter):
		made = fmt.Sprintf("the kept one expires %s", c.Leaf.NotAfter.Format(time.DateOnly))
	default:
		if missing := uncovered(c.Leaf, hosts); missing != "" {
			made = fmt.Sprintf("the kept one does not name %s", missing)
		} else {
			return c, "", nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("servercert: %w", err)
	}
	certPEM, keyPEM, err := generate(hosts, now)
	if err != nil {
		return nil, "", err
	}
	// The key first: a certificate on disk always has its key beside it.
	if err := writeFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, "", err
	}
	if err := writeFile(certFile, certPEM, 0o644); err != nil {
		return nil, "", err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("servercert: %w", err)
	}
	c, err = newCert(kp)
	return c, made, err
}

// uncovered is the first of hosts that the certificate does not name, or "".
func uncovered(leaf *x509.Certificate, hosts []string) string {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return h
			}
		} else if !slices.Contains(leaf.DNSNames, h) {
			return h
		}
	}
	return ""
}

func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("servercert: no host names or addresses for the certificate")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("servercert: %w", err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("servercert: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{Organization: []string{"imaged"}, CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:     now.Add(lifetime),
		// Self-signed: the certificate is its own issuer, so clients that trust it as a root
		// (curl --cacert, Go's RootCAs, iPXE's TRUST=) need it to be a CA.
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("servercert: sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("servercert: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// writeFile writes data to path atomically, with exactly mode (the key 0600 from its first byte).
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := atomicfile.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("servercert: %w", err)
	}
	return nil
}
