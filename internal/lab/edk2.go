package lab

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
)

// The CA certificates of a UEFI blade's HTTPS boot. OVMF (OvmfPkg/Library/TlsAuthConfigLib)
// reads QEMU's fw_cfg file "etc/edk2/https/cacerts" at every boot and stores it, as is, in the
// volatile variable TlsCaCertificate (gEfiTlsCaCertificateGuid), the trust store of EDK2's
// HttpDxe; with no such file the variable is left alone. iPXE from 2025 on, built without
// TRUST= (src/interface/efi/efi_cacert.c; Debian trixie's ipxe.efi, 1.21.1+git20250501), reads
// the same variable at start and trusts each certificate in it, besides the iPXE root CA. On a real server the same store is filled from the
// firmware's setup menu ("Tls Auth Configuration") or through its BMC.

// edk2CACertsFWCfg is the fw_cfg file name OVMF reads. QEMU warns ("externally provided fw_cfg
// item names should be prefixed with opt/"); this one is EDK2's, and OVMF looks for no other.
const edk2CACertsFWCfg = "etc/edk2/https/cacerts"

// efiCertX509 is EFI_CERT_X509_GUID (A5C059A1-94E4-4AA7-87B5-AB155C2BF072), laid out as UEFI
// lays GUIDs out in memory: the first three fields little-endian, the last eight bytes as they
// are.
var efiCertX509 = [16]byte{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}

// edk2CertOwner is the SignatureOwner of the lists EDK2CACerts writes: imaged's own GUID
// (40811106-D22F-484D-B864-5AB222660E7C, made with uuidgen), which tells a firmware menu listing
// the store who added them. Neither EDK2 nor iPXE reads it.
var edk2CertOwner = [16]byte{0x06, 0x11, 0x81, 0x40, 0x2f, 0xd2, 0x4d, 0x48, 0xb8, 0x64, 0x5a, 0xb2, 0x22, 0x66, 0x0e, 0x7c}

// EDK2CACerts encodes the certificates of a PEM file in the format of
// "etc/edk2/https/cacerts" (the one p11-kit's `trust extract --format=edk2-cacerts` writes):
// for each certificate, one EFI_SIGNATURE_LIST (UEFI 2.7 §31.4.1, "Signature Database") of
// type EFI_CERT_X509_GUID, with no signature header and one EFI_SIGNATURE_DATA holding the
// owner GUID and the certificate's DER. All integers are little-endian. PEM blocks other than CERTIFICATE (a
// private key, say) are refused: nothing but certificates goes into firmware.
func EDK2CACerts(pemData []byte) ([]byte, error) {
	var out []byte
	for n := 1; ; n++ {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("lab: PEM block %d is a %s, not a CERTIFICATE: only certificates go into the firmware's CA store", n, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("lab: PEM block %d: %w", n, err)
		}
		sigSize := len(edk2CertOwner) + len(b.Bytes)
		const listHeader = 16 + 4 + 4 + 4 // SignatureType, SignatureListSize, SignatureHeaderSize, SignatureSize
		out = append(out, efiCertX509[:]...)
		out = binary.LittleEndian.AppendUint32(out, uint32(listHeader+sigSize))
		out = binary.LittleEndian.AppendUint32(out, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(sigSize))
		out = append(out, edk2CertOwner[:]...)
		out = append(out, b.Bytes...)
	}
	if len(out) == 0 {
		return nil, errors.New("lab: no PEM CERTIFICATE block to put in the firmware's CA store")
	}
	return out, nil
}
