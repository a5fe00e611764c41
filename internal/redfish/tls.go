package redfish

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// errPinMismatch: the BMC's certificate is not the pinned one.
var errPinMismatch = errors.New("certificate does not match the pinned SHA-256 fingerprint")

// tlsConfig builds the client's TLS settings from cfg (already validated).
func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.Insecure:
		tc.InsecureSkipVerify = true // only ever when configured (Config.Insecure)
	case cfg.Fingerprint != "":
		pin, err := parseFingerprint(cfg.Fingerprint)
		if err != nil {
			return nil, err
		}
		// The pin replaces chain and name verification: BMCs ship self-signed certificates
		// for names nobody uses. InsecureSkipVerify only turns the default verification off;
		// VerifyConnection runs on every handshake, resumed ones included, and is the check.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errPinMismatch
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return fmt.Errorf("%w (got %s)", errPinMismatch, hex.EncodeToString(sum[:]))
			}
			return nil
		}
	case cfg.CA != nil:
		tc.RootCAs = cfg.CA
	case cfg.CAFile != "":
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redfish: config: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redfish: config: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// parseFingerprint accepts 64 hex digits, optionally separated by colons and prefixed with
// "sha256:", as openssl and browsers print them.
func parseFingerprint(s string) ([]byte, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("redfish: config: fingerprint: want the SHA-256 of the certificate as 64 hex digits")
	}
	return b, nil
}

// Fingerprint returns the SHA-256 fingerprint of a DER certificate as Config.Fingerprint
// expects it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// isTLSVerifyError reports a certificate that was refused: retrying cannot help.
func isTLSVerifyError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	return errors.Is(err, errPinMismatch) || errors.As(err, &cve) || errors.As(err, &uae) ||
		errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &rhe)
}
