package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	agent := fs.String("agent", "", "the static imaged-agent program to put in as /init (default: imaged-agent beside this executable, where scripts/build.sh puts it)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// The agent is its own program, found beside imaged rather than embedded in it: a build of
	// imaged runs on the server's architecture, the blades may have another (GOARCH=arm64 go
	// build ./cmd/imaged-agent), and the server need not carry 7 MB it never runs.
	if *agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*agent = filepath.Join(filepath.Dir(exe), "imaged-agent")
		if _, err := os.Stat(*agent); err != nil {
			return usageError{fmt.Sprintf("no agent program beside imaged (%v): install imaged-agent there (scripts/build.sh builds bin/imaged-agent) or name it with -agent", err)}
		}
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
		Binary: *agent, Program: initrd.AgentProgram, Modules: initrd.ModuleSource{Deb: *deb, Tree: *tree, Version: *kver},
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
