package initrd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestBuildFromDeb packs the fake tree into a real .deb with dpkg-deb, then checks that building
// from the .deb gives byte for byte the initrd and kernel that the extracted tree gives.
func TestBuildFromDeb(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("skipping: dpkg-deb not installed (Debian's dpkg)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "pkg")
	makeTree(t, root)
	writeFile(t, filepath.Join(root, "DEBIAN", "control"), []byte(
		"Package: linux-image-"+testVer+"\nVersion: 1\nArchitecture: amd64\nMaintainer: test <t@example.com>\nDescription: fake kernel\n"))
	deb := filepath.Join(dir, "linux-image-"+testVer+"_1_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	binPath, _ := writeBinary(t, dir)
	names := []string{"virtio_net", "virtio_pci", "nvme", "ahci", "ice?"}
	fromDeb := build(t, Options{Binary: binPath, Modules: ModuleSource{Deb: deb}, ModuleNames: names,
		Output: filepath.Join(dir, "deb.gz"), KernelOut: filepath.Join(dir, "deb-vmlinuz")})
	fromTree := build(t, Options{Binary: binPath, Modules: ModuleSource{Tree: root}, ModuleNames: names,
		Output: filepath.Join(dir, "tree.gz"), KernelOut: filepath.Join(dir, "tree-vmlinuz")})
	if diff := cmp.Diff(fromTree.Modules, fromDeb.Modules); diff != "" {
		t.Errorf("modules tree vs deb:\n%s", diff)
	}
	if diff := cmp.Diff(fromTree.Notes, fromDeb.Notes); diff != "" {
		t.Errorf("notes tree vs deb:\n%s", diff)
	}
	if fromDeb.SHA256 != fromTree.SHA256 || fromDeb.KernelSHA256 != fromTree.KernelSHA256 {
		t.Errorf("the .deb and the tree give different bytes: initrd %s vs %s, kernel %s vs %s",
			fromDeb.SHA256, fromTree.SHA256, fromDeb.KernelSHA256, fromTree.KernelSHA256)
	}
	if !slices.Contains(fromDeb.Modules, "crc_t10dif") {
		t.Errorf("the zstd-compressed dependency is missing: %v", fromDeb.Modules)
	}

	_, err := Build(context.Background(), Options{Binary: binPath, Modules: ModuleSource{Deb: deb}, ModuleNames: []string{"nosuch"}, Output: filepath.Join(dir, "x")})
	if err == nil || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), deb) {
		t.Errorf("missing module from a .deb: %v", err)
	}
	_, err = Build(context.Background(), Options{Binary: binPath, Modules: ModuleSource{Deb: filepath.Join(dir, "none.deb")}, Output: filepath.Join(dir, "x")})
	if err == nil || !strings.Contains(err.Error(), "none.deb") {
		t.Errorf("missing .deb: %v", err)
	}
}

// kernelDebDir is where tests look for (and in CI download) Debian's kernel package:
// $IMAGED_KERNEL_CACHE, else <user cache dir>/imaged/kernel.
func kernelDebDir(t *testing.T) string {
	if d := os.Getenv("IMAGED_KERNEL_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("skipping: no cache directory: %v", err)
	}
	return filepath.Join(d, "imaged", "kernel")
}

// TestBuildRealKernelDeb builds the default initrd from Debian's own kernel package. It uses a
// cached .deb, and downloads one (apt-get download, 70 MB) only in CI.
func TestBuildRealKernelDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: reads a 70 MB kernel package twice (about 12 s)")
	}
	dir := kernelDebDir(t)
	debs, _ := filepath.Glob(filepath.Join(dir, "linux-image-*.deb"))
	var deb string
	switch {
	case len(debs) > 0:
		deb = debs[len(debs)-1]
	case os.Getenv("CI") != "":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var err error
		if deb, err = DownloadKernel(ctx, dir); err != nil {
			t.Fatalf("DownloadKernel: %v", err)
		}
	default:
		t.Skipf("skipping: no linux-image-*.deb in %s (CI downloads one; or: mkdir -p %s && cd %s && apt-get download $(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'))", dir, dir, dir)
	}
	work := t.TempDir()
	binPath, bin := writeBinary(t, work)
	out := filepath.Join(work, "initrd.gz")
	kout := filepath.Join(work, "vmlinuz")
	start := time.Now()
	res := build(t, Options{Binary: binPath, Modules: ModuleSource{Deb: deb}, Output: out, KernelOut: kout})
	t.Logf("built from %s in %v: kernel %s, %d modules, cpio %d bytes, gzip %d bytes (binary %d bytes); notes: %v",
		filepath.Base(deb), time.Since(start).Round(time.Millisecond), res.KernelVersion, len(res.Modules),
		res.UncompressedSize, res.Size, len(bin), res.Notes)

	// Lab pitfall P6: the virtio and e1000 chain of Debian's 6.1, dependencies first.
	pos := map[string]int{}
	for i, m := range res.Modules {
		pos[m] = i
	}
	for _, chain := range [][]string{
		{"virtio_ring", "virtio", "virtio_pci"},
		{"virtio_pci_modern_dev", "virtio_pci"},
		{"virtio_pci_legacy_dev", "virtio_pci"},
		{"failover", "net_failover", "virtio_net"},
		{"virtio_ring", "virtio_net"},
		{"virtio", "virtio_blk"},
		{"scsi_common", "scsi_mod", "libata", "libahci", "ahci"},
		{"t10_pi", "nvme_core", "nvme"},
		{"scsi_mod", "sd_mod"},
	} {
		for i := 1; i < len(chain); i++ {
			a, aok := pos[chain[i-1]]
			b, bok := pos[chain[i]]
			if !aok || !bok || a > b {
				t.Errorf("%s (at %d, %v) must come before %s (at %d, %v)", chain[i-1], a, aok, chain[i], b, bok)
			}
		}
	}
	for _, m := range DefaultModules {
		name := strings.TrimSuffix(m, "?")
		if !slices.Contains(res.Modules, name) {
			t.Errorf("default module %s is not in Debian's kernel %s", name, res.KernelVersion)
		}
	}
	k, err := os.ReadFile(kout)
	if err != nil || len(k) < 1<<20 || !bytes.Contains(k[:1024], []byte("HdrS")) {
		t.Errorf("KernelOut is not a bzImage (%d bytes, %v)", len(k), err)
	}
	_, files := readArchive(t, out)
	if len(files) != len(res.Files) {
		t.Errorf("archive has %d entries, Result says %d", len(files), len(res.Files))
	}
}
