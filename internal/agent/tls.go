package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/imaged/imaged/internal/blockcopy"
)

// ErrCertificate is returned (wrapped) when the server's certificate is not the pinned one:
// something other than imaged answers at its address, or imaged's certificate changed since
// this blade booted.
var ErrCertificate = errors.New("the server's certificate is not the one the boot script pinned")

// ParsePin reads a certificate's SHA-256 as 64 hex digits, colons allowed (as openssl prints it).
func ParsePin(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.ToLower(s), ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("want the SHA-256 of imaged's certificate: 64 hex digits")
	}
	return b, nil
}

func (c *Config) validateTLS() error {
	switch {
	case c.Server == nil:
	case c.Server.Scheme == "https" && len(c.TLSPin) == 0:
		return fmt.Errorf("agent: imaged.server=%s is https but imaged.tls_sha256 is missing: the agent trusts no certificate but the pinned one", c.Server)
	case c.Server.Scheme != "https" && len(c.TLSPin) != 0:
		return fmt.Errorf("agent: imaged.tls_sha256 is set but imaged.server=%s is not https", c.Server)
	}
	return nil
}

// tlsConfig is the agent's TLS to imaged: TLS 1.2 or later, and a server certificate whose
// SHA-256 is TLSPin, nothing else. Chain, name and validity dates are not checked (InsecureSkipVerify
// turns only that default verification off): a self-signed certificate has no chain, blades
// reach imaged by address, and a blade's clock at netboot is not to be trusted. VerifyConnection
// runs on every handshake, resumed ones included, and is the check. Nil without a pin.
func (c *Config) tlsConfig() *tls.Config {
	if len(c.TLSPin) == 0 {
		return nil
	}
	pin, server := c.TLSPin, c.Server.Host
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// Another certificate is not a network hiccup: blockcopy must not try the block
			// again (Permanent), whatever its retries.
			if len(cs.PeerCertificates) == 0 {
				return blockcopy.Permanent(fmt.Errorf("agent: %w: %s presented none", ErrCertificate, server))
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return blockcopy.Permanent(fmt.Errorf("agent: %w: %s presented a certificate with SHA-256 %x, imaged.tls_sha256 is %x; refusing it",
					ErrCertificate, server, sum, pin))
			}
			return nil
		},
	}
}

// apiClient is the agent's client for the agent API: straight to imaged, whatever the
// environment says of proxies, with the pinned certificate only.
func (c *Config) apiClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		TLSClientConfig:     c.tlsConfig(),
	}}
}

// BlobClient is blockcopy's HTTP client with the agent's TLS: what the agent streams the image
// with, and what bench/blockcopy measures over HTTPS (so that the bench's client is this one).
func (c *Config) BlobClient() *http.Client {
	hc := blockcopy.NewClient()
	hc.Transport.(*http.Transport).TLSClientConfig = c.tlsConfig()
	return hc
}
