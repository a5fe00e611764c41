package initrd

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
)

const testVer = "6.1.0-test-amd64"

type treeModule struct {
	rel  string // below lib/modules/<ver>, with the compression suffix
	name string
	deps []string
}

// fakeTreeModules mirrors the virtio and e1000 part of Debian's 6.1 tree (P6 in the lab
// README), plus a compressed module of each kind and a deeper chain.
var fakeTreeModules = []treeModule{
	{"kernel/drivers/virtio/virtio_ring.ko", "virtio_ring", nil},
	{"kernel/drivers/virtio/virtio.ko", "virtio", []string{"virtio_ring"}},
	{"kernel/drivers/virtio/virtio_pci_modern_dev.ko", "virtio_pci_modern_dev", nil},
	{"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", "virtio_pci_legacy_dev", nil},
	{"kernel/drivers/virtio/virtio_pci.ko", "virtio_pci", []string{"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"}},
	{"kernel/net/core/failover.ko", "failover", nil},
	{"kernel/drivers/net/net_failover.ko", "net_failover", []string{"failover"}},
	{"kernel/drivers/net/virtio_net.ko", "virtio_net", []string{"virtio_ring", "virtio", "net_failover"}},
	{"kernel/drivers/block/virtio_blk.ko", "virtio_blk", []string{"virtio", "virtio_ring"}},
	{"kernel/drivers/net/ethernet/intel/e1000/e1000.ko", "e1000", nil},
	{"kernel/lib/crc-t10dif.ko.zst", "crc_t10dif", nil},
	{"kernel/block/t10-pi.ko.gz", "t10_pi", []string{"crc-t10dif"}},
	{"kernel/drivers/nvme/host/nvme-core.ko", "nvme_core", []string{"t10-pi"}},
	{"kernel/drivers/nvme/host/nvme.ko", "nvme", []string{"nvme-core"}},
	{"kernel/drivers/unused/unused.ko", "unused", nil},
}

// makeTree writes <root>/lib/modules/<ver>/... and <root>/boot/vmlinuz-<ver>, and returns the
// plain bytes of every module by name.
func makeTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	verDir := filepath.Join(root, "lib", "modules", testVer)
	plain := map[string][]byte{}
	for _, m := range fakeTreeModules {
		ko := fakeModule(t, m.name, testVer, m.deps...)
		plain[m.name] = ko
		data := ko
		switch {
		case strings.HasSuffix(m.rel, ".zst"):
			enc, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			data = enc.EncodeAll(ko, nil)
		case strings.HasSuffix(m.rel, ".gz"):
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(ko)
			zw.Close()
			data = b.Bytes()
		}
		writeFile(t, filepath.Join(verDir, m.rel), data)
	}
	writeFile(t, filepath.Join(verDir, "modules.builtin"), []byte("kernel/net/packet/af_packet.ko\nkernel/drivers/ata/ahci.ko\n"))
	writeFile(t, filepath.Join(verDir, "modules.order"), []byte("kernel/drivers/virtio/virtio.ko\n"))
	writeFile(t, filepath.Join(root, "boot", "vmlinuz-"+testVer), []byte("fake bzImage "+testVer))
	return plain
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeBinary(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	bin := fakeBinary(t, elf.EM_X86_64, "")
	p := filepath.Join(dir, "imaged")
	writeFile(t, p, bin)
	return p, bin
}

type archived struct {
	hdr  *cpio.Header
	data []byte
}

// readArchive decompresses and parses the newc archive with an independent reader
// (github.com/cavaliergopher/cpio), checking the magic of every header on the way.
func readArchive(t *testing.T, path string) (names []string, files map[string]archived) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r io.Reader
	switch {
	case bytes.HasPrefix(raw, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case bytes.HasPrefix(raw, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("%s: neither gzip nor zstd (starts %x)", path, raw[:4])
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decompress %s: %v", path, err)
	}
	if !bytes.HasPrefix(plain, []byte("070701")) {
		t.Fatalf("archive does not start with the newc magic 070701: %q", plain[:6])
	}
	files = map[string]archived{}
	cr := cpio.NewReader(bytes.NewReader(plain))
	for {
		h, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("cpio: %v", err)
		}
		b, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		files[h.Name] = archived{hdr: h, data: b}
	}
	return names, files
}

func build(t *testing.T, opt Options) Result {
	t.Helper()
	res, err := Build(context.Background(), opt)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res
}

func TestBuildFromTree(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "x")
	plain := makeTree(t, root)
	binPath, bin := writeBinary(t, dir)
	out := filepath.Join(dir, "initrd.gz")
	res := build(t, Options{
		Binary:      binPath,
		Modules:     ModuleSource{Tree: root},
		ModuleNames: []string{"virtio_net", "virtio_pci", "virtio-blk", "e1000", "nvme", "ahci", "ice?"},
		Output:      out,
	})

	wantOrder := []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net",
		"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "e1000",
		"crc_t10dif", "t10_pi", "nvme_core", "nvme"}
	if diff := cmp.Diff(wantOrder, res.Modules); diff != "" {
		t.Errorf("module order (-want +got):\n%s", diff)
	}
	assertDepsFirst(t, res.Modules, fakeTreeModules)
	wantNotes := []string{"ahci is built into kernel " + testVer + "; skipped", "ice (optional) is not in kernel " + testVer + "; skipped"}
	if diff := cmp.Diff(wantNotes, res.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if res.KernelVersion != testVer {
		t.Errorf("KernelVersion = %q", res.KernelVersion)
	}

	names, files := readArchive(t, out)
	wantNames := []string{"dev", "dev/console", "init", "lib", "lib/modules"}
	sortedMods := slices.Sorted(slices.Values(wantOrder))
	for _, m := range sortedMods {
		wantNames = append(wantNames, "lib/modules/"+m+".ko")
	}
	wantNames = append(wantNames, "modules.order", "proc", "sys", "tmp")
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("archive entries (-want +got):\n%s", diff)
	}
	var resNames []string
	for _, f := range res.Files {
		resNames = append(resNames, f.Name)
	}
	if diff := cmp.Diff(wantNames, resNames); diff != "" {
		t.Errorf("Result.Files (-want +got):\n%s", diff)
	}
	for name, f := range files {
		if f.hdr.Uid != 0 || f.hdr.Guid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", name, f.hdr.Uid, f.hdr.Guid)
		}
		if f.hdr.ModTime.Unix() != 0 {
			t.Errorf("%s mtime %v, want the fixed 0", name, f.hdr.ModTime)
		}
	}
	init := files["init"]
	if init.hdr.Mode != cpio.TypeReg|0o755 {
		t.Errorf("/init mode %o, want regular 0755", init.hdr.Mode)
	}
	if !bytes.Equal(init.data, bin) {
		t.Errorf("/init differs from the binary (%d vs %d bytes)", len(init.data), len(bin))
	}
	if got := string(files["modules.order"].data); got != strings.Join(wantOrder, "\n")+"\n" {
		t.Errorf("modules.order = %q", got)
	}
	for _, m := range wantOrder {
		f := files["lib/modules/"+m+".ko"]
		if !bytes.Equal(f.data, plain[m]) {
			t.Errorf("%s.ko in the archive is not the plain module (compressed ones must be decompressed)", m)
		}
		if f.hdr.Mode != cpio.TypeReg|0o644 {
			t.Errorf("%s.ko mode %o", m, f.hdr.Mode)
		}
	}
	if m := files["tmp"].hdr.Mode; m != cpio.TypeDir|cpio.ModeSticky|0o777 {
		t.Errorf("/tmp mode %o, want 041777", m)
	}
	if m := files["dev/console"].hdr.Mode; m != cpio.TypeChar|0o600 {
		t.Errorf("/dev/console mode %o, want char device 0600", m)
	}
	if maj, min := rdev(t, out, "dev/console"); maj != 5 || min != 1 {
		t.Errorf("/dev/console is %d:%d, want 5:1", maj, min)
	}

	// Result describes the file that is there.
	raw, _ := os.ReadFile(out)
	sum := sha256.Sum256(raw)
	if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(raw)) {
		t.Errorf("Result says %d bytes sha256 %s; file has %d bytes sha256 %x", res.Size, res.SHA256, len(raw), sum)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o644 {
		t.Errorf("output mode %v", fi.Mode())
	}
	assertNoTemps(t, dir)

	// An independent newc reader agrees, when busybox is around.
	if bb, err := exec.LookPath("busybox"); err == nil {
		listing, err := exec.Command("sh", "-c", "gzip -dc "+out+" | "+bb+" cpio -tv").CombinedOutput()
		if err != nil {
			t.Fatalf("busybox cpio -tv: %v\n%s", err, listing)
		}
		for _, want := range []string{"crw------- 0/0", "-rwxr-xr-x 0/0", "lib/modules/virtio_net.ko"} {
			if !strings.Contains(string(listing), want) {
				t.Errorf("busybox cpio listing lacks %q:\n%s", want, listing)
			}
		}
	}
}

// assertDepsFirst checks that every module comes after all its dependencies.
func assertDepsFirst(t *testing.T, order []string, mods []treeModule) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range order {
		pos[m] = i
	}
	for _, m := range mods {
		i, ok := pos[m.name]
		if !ok {
			continue
		}
		for _, d := range m.deps {
			d = normalizeName(d)
			if j, ok := pos[d]; !ok || j > i {
				t.Errorf("%s (at %d) is not preceded by its dependency %s (at %d, present %v)", m.name, i, d, j, ok)
			}
		}
	}
}

// rdev reads the rdevmajor and rdevminor fields of one newc header directly (the cpio reader
// does not expose them).
func rdev(t *testing.T, path, name string) (uint64, uint64) {
	t.Helper()
	raw, _ := os.ReadFile(path)
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	i := bytes.Index(plain, []byte(name+"\x00"))
	if i < 110 {
		t.Fatalf("%s not found", name)
	}
	h := plain[i-110 : i]
	if string(h[:6]) != "070701" {
		t.Fatalf("no newc header before %s", name)
	}
	maj, _ := strconv.ParseUint(string(h[78:86]), 16, 32)
	min, _ := strconv.ParseUint(string(h[86:94]), 16, 32)
	return maj, min
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	for _, comp := range []string{"gzip", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "x")
			makeTree(t, root)
			binPath, _ := writeBinary(t, dir)
			opt := Options{Binary: binPath, Modules: ModuleSource{Tree: root}, Compression: comp,
				ModuleNames: []string{"virtio_net", "nvme", "e1000"}, Output: filepath.Join(dir, "a")}
			a := build(t, opt)
			// Different file times and a different output name must not change a byte.
			later := time.Now().Add(time.Hour)
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				return os.Chtimes(p, later, later)
			})
			opt.Output = filepath.Join(dir, "b")
			b := build(t, opt)
			ab, _ := os.ReadFile(a.Output)
			bb, _ := os.ReadFile(b.Output)
			if !bytes.Equal(ab, bb) || a.SHA256 != b.SHA256 {
				t.Fatalf("two builds of the same inputs differ: %s vs %s", a.SHA256, b.SHA256)
			}
			names, _ := readArchive(t, a.Output) // decompresses with the matching reader
			if !slices.Contains(names, "lib/modules/nvme_core.ko") {
				t.Errorf("entries: %v", names)
			}
			if tool := map[string]string{"gzip": "gzip", "zstd": "zstd"}[comp]; tool != "" {
				if p, err := exec.LookPath(tool); err == nil {
					if out, err := exec.Command(p, "-t", a.Output).CombinedOutput(); err != nil {
						t.Errorf("%s -t: %v\n%s", tool, err, out)
					}
				}
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "x")
	makeTree(t, root)
	binPath, _ := writeBinary(t, dir)
	// A module whose dependency is nowhere.
	writeFile(t, filepath.Join(root, "lib/modules", testVer, "kernel/drivers/net/orphan.ko"), fakeModule(t, "orphan", testVer, "ghost"))
	// A module from another kernel.
	writeFile(t, filepath.Join(root, "lib/modules", testVer, "kernel/drivers/net/stale.ko"), fakeModule(t, "stale", "5.10.0-old-amd64"))
	dyn := filepath.Join(dir, "dynamic")
	writeFile(t, dyn, fakeBinary(t, elf.EM_X86_64, "/lib64/ld-linux-x86-64.so.2"))
	arm := filepath.Join(dir, "arm64")
	writeFile(t, arm, fakeBinary(t, elf.EM_AARCH64, ""))
	notELF := filepath.Join(dir, "script")
	writeFile(t, notELF, []byte("#!/bin/sh\n"))

	for _, tc := range []struct {
		name    string
		opt     Options
		is      error
		wantErr []string
	}{
		{"missing module", Options{ModuleNames: []string{"virtio_net", "nosuchdriver", "mlx9?"}}, ErrModuleNotFound, []string{"nosuchdriver", "built in"}},
		{"missing dependency", Options{ModuleNames: []string{"orphan"}}, ErrModuleNotFound, []string{"orphan needs ghost"}},
		{"wrong kernel", Options{ModuleNames: []string{"stale"}}, nil, []string{"stale was built for kernel 5.10.0-old-amd64"}},
		{"dynamic binary", Options{Binary: dyn}, nil, []string{"dynamically linked", "CGO_ENABLED=0"}},
		{"wrong architecture", Options{Binary: arm, ModuleNames: []string{"e1000"}}, nil, []string{"EM_AARCH64", "EM_X86_64"}},
		{"not ELF", Options{Binary: notELF}, nil, []string{"not an ELF executable"}},
		{"not a Go program", Options{Program: AgentProgram}, nil, []string{"is not a Go program", "want a build of " + AgentProgram}},
		{"bad compression", Options{Compression: "lz4"}, nil, []string{`unknown compression "lz4"`}},
		{"no source", Options{Modules: ModuleSource{Tree: "-"}}, nil, []string{"module tree"}},
		{"both sources", Options{Modules: ModuleSource{Tree: root, Deb: "x.deb"}}, nil, []string{"only one"}},
		{"unknown version", Options{Modules: ModuleSource{Tree: root, Version: "9.9"}}, nil, []string{"no kernel 9.9", testVer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := tc.opt
			if opt.Binary == "" {
				opt.Binary = binPath
			}
			if opt.Modules == (ModuleSource{}) {
				opt.Modules = ModuleSource{Tree: root}
			} else if opt.Modules.Tree == "-" {
				opt.Modules.Tree = filepath.Join(dir, "nowhere")
			}
			if opt.ModuleNames == nil {
				opt.ModuleNames = []string{"e1000"}
			}
			opt.Output = filepath.Join(dir, "out.gz")
			_, err := Build(context.Background(), opt)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(opt.Output); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output exists after a failed build")
			}
			assertNoTemps(t, dir)
		})
	}
}

func TestTreeForms(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "x")
	makeTree(t, root)
	binPath, _ := writeBinary(t, dir)
	for _, tree := range []string{root, filepath.Join(root, "lib", "modules"), filepath.Join(root, "lib", "modules", testVer)} {
		t.Run(strings.TrimPrefix(tree, dir), func(t *testing.T) {
			kout := filepath.Join(t.TempDir(), "vmlinuz")
			res := build(t, Options{Binary: binPath, Modules: ModuleSource{Tree: tree}, ModuleNames: []string{"e1000"},
				Output: filepath.Join(t.TempDir(), "i.gz"), KernelOut: kout})
			got, err := os.ReadFile(kout)
			if err != nil || string(got) != "fake bzImage "+testVer {
				t.Errorf("KernelOut: %q, %v", got, err)
			}
			sum := sha256.Sum256(got)
			if res.Kernel != kout || res.KernelSHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("Result kernel %q %s", res.Kernel, res.KernelSHA256)
			}
		})
	}
	// Two kernels side by side need Version.
	writeFile(t, filepath.Join(root, "lib/modules/6.2.0-other/kernel/e1000.ko"), fakeModule(t, "e1000", "6.2.0-other"))
	_, err := Build(context.Background(), Options{Binary: binPath, Modules: ModuleSource{Tree: root}, Output: filepath.Join(dir, "o")})
	if err == nil || !strings.Contains(err.Error(), "several kernels") {
		t.Errorf("two kernels without Version: %v", err)
	}
	res := build(t, Options{Binary: binPath, Modules: ModuleSource{Tree: root, Version: "6.2.0-other"}, ModuleNames: []string{"e1000"}, Output: filepath.Join(dir, "o")})
	if res.KernelVersion != "6.2.0-other" {
		t.Errorf("KernelVersion %q", res.KernelVersion)
	}
}

func TestXZModule(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("skipping: xz not installed (apt-get install xz-utils)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "x")
	makeTree(t, root)
	ko := fakeModule(t, "xzmod", testVer)
	cmd := exec.Command("xz", "--stdout", "--check=crc32")
	cmd.Stdin = bytes.NewReader(ko)
	xz, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "lib/modules", testVer, "kernel/xzmod.ko.xz"), xz)
	binPath, _ := writeBinary(t, dir)
	out := filepath.Join(dir, "i.gz")
	build(t, Options{Binary: binPath, Modules: ModuleSource{Tree: root}, ModuleNames: []string{"xzmod"}, Output: out})
	_, files := readArchive(t, out)
	if !bytes.Equal(files["lib/modules/xzmod.ko"].data, ko) {
		t.Error("xz module not decompressed")
	}
}

func TestKernelPackage(t *testing.T) {
	out := []byte("linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Depends: firmware-linux\n")
	if got := kernelPackage(out, "amd64"); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("got %q", got)
	}
	if got := kernelPackage([]byte("linux-image-amd64\n"), "amd64"); got != "" {
		t.Errorf("got %q from no Depends", got)
	}
}

// The agent's initramfs takes the agent and nothing else: another Go program as /init (imaged's
// server prints its usage and exits, and the kernel panics when init exits) is refused before
// anything is written; a real build of cmd/imaged-agent goes in byte for byte.
func TestBuildAgentProgram(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "tree")
	makeTree(t, root)
	opt := Options{Program: AgentProgram, Modules: ModuleSource{Tree: root}, ModuleNames: []string{"e1000"}, Output: filepath.Join(dir, "initrd.img")}

	// Another Go program: this test's own binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opt.Binary = self
	_, err = Build(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "is a build of github.com/imaged/imaged/internal/initrd.test, not of "+AgentProgram) {
		t.Errorf("Build with the test binary as the agent: %v", err)
	}
	if _, serr := os.Stat(opt.Output); serr == nil {
		t.Error("the refused build wrote its output")
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping the real agent: no go command")
	}
	agentBin := filepath.Join(dir, "imaged-agent")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", agentBin, AgentProgram)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", AgentProgram, err, out)
	}
	opt.Binary = agentBin
	if _, err := Build(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	_, files := readArchive(t, opt.Output)
	want, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["init"].data, want) {
		t.Errorf("/init is %d bytes, not the %d of the agent", len(files["init"].data), len(want))
	}
}
