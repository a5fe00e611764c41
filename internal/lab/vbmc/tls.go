package vbmc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/imaged/imaged/internal/atomicfile"
)

// Names of the files GenerateCA writes in its directory.
const (
	caName   = "ca.pem"
	certName = "bmc.pem"
	keyName  = "bmc-key.pem"
)

// GenerateCA makes a throw-away certificate authority and a server certificate it signs for
// hosts (IP addresses become IP SANs, anything else DNS SANs), all ECDSA P-256, and writes them
// into dir: ca.pem (what clients trust, for example sushy's verify=), bmc.pem and bmc-key.pem
// (Config.CertFile and Config.KeyFile). Each file is written atomically (temp file, fsync, rename); the key is 0600 from the
// start. The CA's own key is never written: nothing else can ever be signed with it.
func GenerateCA(dir string, hosts []string) (caFile, certFile, keyFile string, err error) {
	if len(hosts) == 0 {
		return "", "", "", errors.New("vbmc: generate CA: no hosts for the server certificate")
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"imaged lab"}, CommonName: "imaged lab BMC CA"},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew between lab hosts
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: sign CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: parse CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"imaged lab"}, CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: sign server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", "", fmt.Errorf("vbmc: encode server key: %w", err)
	}

	caFile, certFile, keyFile = filepath.Join(dir, caName), filepath.Join(dir, certName), filepath.Join(dir, keyName)
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{keyFile, "PRIVATE KEY", keyDER, 0o600},
		{certFile, "CERTIFICATE", der, 0o644},
		{caFile, "CERTIFICATE", caDER, 0o644},
	} {
		if err := atomicfile.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return "", "", "", fmt.Errorf("vbmc: %w", err)
		}
	}
	return caFile, certFile, keyFile, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
