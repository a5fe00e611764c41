package lab_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab"
)

func testCertDER(t *testing.T, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// guidBytes lays a GUID written as text out as UEFI does in memory: the first three fields
// little-endian, the rest as written (UEFI 2.7 Appendix A, EFI_GUID).
func guidBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("bad GUID %q", s)
	}
	return []byte{b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]}
}

// TestEDK2CACerts decodes what EDK2CACerts writes the way EDK2's HttpDxe and iPXE's efisig_find
// walk a TlsCaCertificate variable: EFI_SIGNATURE_LISTs back to back, each with its type, its
// total size, its header size and the size of each EFI_SIGNATURE_DATA (owner GUID, then DER).
func TestEDK2CACerts(t *testing.T) {
	certs := [][]byte{testCertDER(t, "imaged"), testCertDER(t, "an intermediate")}
	var in []byte
	for _, der := range certs {
		in = append(in, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	out, err := lab.EDK2CACerts(in)
	if err != nil {
		t.Fatal(err)
	}
	x509Type := guidBytes(t, "A5C059A1-94E4-4AA7-87B5-AB155C2BF072") // EFI_CERT_X509_GUID
	rest := out
	for i, der := range certs {
		if len(rest) < 28 {
			t.Fatalf("list %d: %d bytes left, want a 28-byte EFI_SIGNATURE_LIST header", i, len(rest))
		}
		listSize := binary.LittleEndian.Uint32(rest[16:])
		headerSize := binary.LittleEndian.Uint32(rest[20:])
		sigSize := binary.LittleEndian.Uint32(rest[24:])
		if !bytes.Equal(rest[:16], x509Type) {
			t.Errorf("list %d: SignatureType %x, want EFI_CERT_X509_GUID %x", i, rest[:16], x509Type)
		}
		if headerSize != 0 {
			t.Errorf("list %d: SignatureHeaderSize %d, want 0", i, headerSize)
		}
		if want := uint32(16 + len(der)); sigSize != want {
			t.Errorf("list %d: SignatureSize %d, want %d (owner GUID + DER)", i, sigSize, want)
		}
		if want := 28 + headerSize + sigSize; listSize != want || int(listSize) > len(rest) {
			t.Fatalf("list %d: SignatureListSize %d, want %d (one signature) within the %d bytes left", i, listSize, want, len(rest))
		}
		if got := rest[28+16 : listSize]; !bytes.Equal(got, der) {
			t.Errorf("list %d: the signature data is not the certificate's DER", i)
		}
		rest = rest[listSize:]
	}
	if len(rest) != 0 {
		t.Errorf("%d bytes after the last list", len(rest))
	}
}

func TestEDK2CACertsRefuses(t *testing.T) {
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0}})
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: testCertDER(t, "imaged")})
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"a key after the certificate": {append(cert, key...), "PEM block 2 is a PRIVATE KEY"},
		"no PEM at all":               {[]byte("not PEM"), "no PEM CERTIFICATE block"},
		"empty":                       {nil, "no PEM CERTIFICATE block"},
		"a certificate that is not":   {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), "PEM block 1"},
	} {
		out, err := lab.EDK2CACerts(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %d bytes, error %v; want an error containing %q", name, len(out), err, c.want)
		}
	}
}
