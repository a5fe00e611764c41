package lab_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab"
	"github.com/imaged/imaged/internal/machines"
)

// trixieIPXEDir is where scripts/install-deps.sh unpacks Debian trixie's ipxe package
// (1.21.1+git20250501), whose ipxe.efi speaks HTTPS and trusts the UEFI firmware's CA store.
// Bookworm's iPXE has no HTTPS at all.
func trixieIPXEDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(cacheDir(), "ipxe-trixie", "root", "usr", "lib", "ipxe")
	if _, err := os.Stat(filepath.Join(dir, "ipxe.efi")); err != nil {
		t.Fatalf("Debian trixie's ipxe.efi: %v (scripts/install-deps.sh fetches it into %s)", err, cacheDir())
	}
	return dir
}

// privateBootDir gives the lab a boot directory of its own in place of the shared one, holding
// the shared kernel and initramfs: imaged copies its boot programs from boot.ipxe_dir into the
// assets directory, and other tests serve bookworm's from the shared one.
func privateBootDir(t *testing.T, l *lab.Lab) {
	t.Helper()
	shared, err := os.Readlink(l.BootDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l.BootDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(l.BootDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		src, dst := filepath.Join(shared, f), filepath.Join(l.BootDir(), f)
		if err := os.Link(src, dst); err == nil {
			continue
		}
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// impostorCert writes a certificate that looks like imaged's (the same subject, names and
// validity) but has another key: what a host in the middle would present.
func impostorCert(t *testing.T, real string) string {
	t.Helper()
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s holds no PEM block", real)
	}
	orig, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: orig.Subject, NotBefore: orig.NotBefore, NotAfter: orig.NotAfter,
		KeyUsage: orig.KeyUsage, ExtKeyUsage: orig.ExtKeyUsage, BasicConstraintsValid: true,
		IPAddresses: orig.IPAddresses, DNSNames: orig.DNSNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "impostor.pem")
	if err := os.WriteFile(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNetbootUEFIiPXEHTTPS is issue 11's "iPXE gets the CA or a pinned certificate where it
// supports it" on the path that needs no iPXE build: a UEFI blade whose firmware trusts imaged's
// certificate (fw_cfg etc/edk2/https/cacerts, OVMF's TlsCaCertificate variable) PXE-boots Debian
// trixie's ipxe.efi, which trusts that store, says in DHCP that it can do HTTPS, and is given the
// https script URL (http.tls.ipxe_https); the script, the kernel and the initramfs then come over
// HTTPS up to the agent's hello. A second blade whose firmware trusts another certificate with
// the same names gets as far as the TLS handshake and no further: iPXE refuses imaged's.
func TestNetbootUEFIiPXEHTTPS(t *testing.T) {
	l := newLab(t, "imt-https")
	ipxeDir := trixieIPXEDir(t)
	privateBootDir(t, l)
	trusted := lab.Blade{ID: "ms1-c1n5", MAC: "52:54:00:99:00:15", IP: "10.99.0.15", Firmware: "uefi", NoROM: true}
	impostor := lab.Blade{ID: "ms1-c1n6", MAC: "52:54:00:99:00:16", IP: "10.99.0.16", Firmware: "uefi", NoROM: true}
	cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{trusted, impostor}, IPXEDir: ipxeDir, IPXEHTTPS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	trusted.HTTPSCACerts = lab.CertFile(l.Dir)
	impostor.HTTPSCACerts = impostorCert(t, lab.CertFile(l.Dir))
	httpsScript := regexp.QuoteMeta(lab.HTTPSURL()) + `/boot/[0-9a-f:-]+\.ipxe`

	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		vm, m, ev := netboot(t, l, trusted, 240*time.Second)
		if m.LastHello.IP.String() != trusted.IP {
			t.Errorf("agent's address %s, want the reservation %s", m.LastHello.IP, trusted.IP)
		}
		// EDK2's PXE got trixie's ipxe.efi over TFTP; that iPXE advertised HTTPS (175.20) and
		// was handed the https script URL, and fetched the script, kernel and initramfs there.
		requireEvents(t, ev, map[string]string{
			"dhcp":   `ipxe client: ack 10\.99\.0\.15, boot file ` + httpsScript,
			"tftp":   `ipxe\.efi`,
			"script": `profile agent`,
			"http":   `initrd\.img: 200`,
			"hello":  `agent hello`,
		})
		// iPXE's own account: its version (trixie's, not bookworm's 1.0.0) and each URL it
		// fetched, "... ok" once done (a long download shows its progress in between).
		console := vm.Lines()
		for _, want := range []string{`iPXE 1\.2[1-9]`, httpsScript + `\.\.\..* ok`,
			regexp.QuoteMeta(lab.HTTPSURL()) + `/boot/assets/vmlinuz\.\.\..* ok`, regexp.QuoteMeta(lab.HTTPSURL()) + `/boot/assets/initrd\.img\.\.\..* ok`} {
			if l, ok := consoleLine(console, want); ok {
				t.Logf("console %.1f s: %q", l.At.Seconds(), l.Text)
			} else {
				t.Errorf("the console has no line matching %q", want)
			}
		}
		if _, ok := consoleLine(console, regexp.QuoteMeta(lab.BaseURL())+`/boot/`); ok {
			t.Errorf("iPXE fetched something from the plain listener (%s)", lab.BaseURL())
		}
	})

	t.Run("impostor", func(t *testing.T) {
		t.Parallel()
		vmSlots <- struct{}{}
		defer func() { <-vmSlots }()
		ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
		defer cancel()
		vm := boot(ctx, t, l, impostor)
		defer vm.Stop()
		// iPXE names the URL and the reason. 0216eb8f is EACCES (0x02) raised in x509.c
		// (ERRFILE 0x16e000) with disambiguator 0x0b, "No usable certificates":
		// x509_validate_chain found no certificate in the server's chain that is trusted, the
		// low byte being EFI_ACCESS_DENIED. Any other failure (a timeout, a refused connection,
		// a TLS alert) has another code.
		refused, err := vm.WaitFor(ctx, regexp.MustCompile(httpsScript+`\.\.\. Permission denied \(https?://ipxe\.org/0216eb8f\)`))
		if err != nil {
			t.Fatalf("iPXE never said it refused imaged's certificate: %v", err)
		}
		t.Logf("%s refused at %.1f s: %s", impostor.ID, refused.At.Seconds(), refused.Text)
		var m machines.Machine
		if err := l.Get(ctx, "/api/v1/machines/"+impostor.ID, &m); err != nil {
			t.Fatal(err)
		}
		if m.LastHello != nil {
			t.Errorf("%s said hello at %s although its iPXE refused imaged's certificate", impostor.ID, m.LastHello.Time)
		}
		ev, err := l.Events(ctx, impostor.ID)
		if err != nil {
			t.Fatal(err)
		}
		requireEvents(t, ev, map[string]string{"dhcp": `ipxe client: ack 10\.99\.0\.16, boot file ` + httpsScript})
		for _, e := range ev {
			if e.Kind == "script" || e.Kind == "hello" {
				t.Errorf("imaged served %s although its iPXE refused the certificate: %s %s", impostor.ID, e.Kind, e.Message)
			}
		}
	})
}

// consoleLine returns the first console line matching pattern.
func consoleLine(lines []lab.Line, pattern string) (lab.Line, bool) {
	re := regexp.MustCompile(pattern)
	for _, l := range lines {
		if re.MatchString(l.Text) {
			return l, true
		}
	}
	return lab.Line{}, false
}
