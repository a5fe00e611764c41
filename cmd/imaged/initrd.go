package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imaged/imaged/internal/initrd"
)

func cmdInitrd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if _, rest, err := subcommand(args, "initrd", "build"); err != nil {
		return err
	} else {
		args = rest
	}
	fs := newFlags("initrd build", stderr)
	out := fs.String("out", "initrd.img", "the initramfs to write (atomically)")
	kernelOut := fs.String("kernel-out", "", "also write the kernel (vmlinuz) from the same package here")
	deb := fs.String("kernel-deb", "", "Debian kernel package (linux-image-*.deb) to take modules from")
	tree := fs.String("modules", "", "extracted module tree instead of -kernel-deb (/lib/modules/<ver>, or a dpkg -x root)")
	download := fs.String("download", "", "download Debian's current kernel package into this directory (apt-get download) and use it")
	kver := fs.String("kernel-version", "", "kernel release to pick when the source holds several")
	mods := fs.String("modules-list", "", "comma-separated modules (default: virtio, e1000/e1000e, nvme, ahci and common blade NICs/HBAs; name? = optional)")
	comp := fs.String("compression", "zstd", "gzip or zstd")
	binary := fs.String("binary", "", "the static imaged binary to put in as /init (default: this executable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*binary = exe
	}
	if *download != "" {
		p, err := initrd.DownloadKernel(ctx, *download)
		if err != nil {
			return err
		}
		*deb = p
	}
	if (*deb == "") == (*tree == "") {
		return usageError{"imaged initrd build needs exactly one of -kernel-deb, -modules or -download"}
	}
	var names []string
	if *mods != "" {
		names = strings.Split(*mods, ",")
	}
	res, err := initrd.Build(ctx, initrd.Options{
		Binary: *binary, Modules: initrd.ModuleSource{Deb: *deb, Tree: *tree, Version: *kver},
		ModuleNames: names, Compression: *comp, Output: *out, KernelOut: *kernelOut,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes (%d uncompressed), sha256 %s\nkernel %s, %d modules: %s\n",
		res.Output, res.Size, res.UncompressedSize, res.SHA256, res.KernelVersion, len(res.Modules), strings.Join(res.Modules, " "))
	if res.Kernel != "" {
		fmt.Fprintf(stdout, "%s: sha256 %s\n", res.Kernel, res.KernelSHA256)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	return nil
}
