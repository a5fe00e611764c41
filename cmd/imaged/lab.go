package main

import (
	"context"
	"io"
	"os"

	"github.com/imaged/imaged/internal/lab"
)

func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if _, rest, err := subcommand(args, "lab", "demo"); err != nil {
		return err
	} else {
		args = rest
	}
	fs := newFlags("lab demo", stderr)
	dir := fs.String("dir", "/var/tmp/imaged-lab", "work directory: config, state, boot assets, console logs")
	cache := fs.String("cache", "/var/cache/imaged-lab", "where Debian's kernel package is kept between runs")
	fw := fs.String("firmware", "bios", "blade firmware: bios (SeaBIOS + iPXE ROM) or uefi (OVMF: EDK2 PXE → TFTP ipxe.efi → iPXE)")
	keep := fs.Bool("keep", false, "leave the lab up until Ctrl-C, to explore the API")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *fw != "bios" && *fw != "uefi" {
		return usageError{"-firmware must be bios or uefi"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return lab.Demo(ctx, lab.DemoOptions{Dir: *dir, CacheDir: *cache, Imaged: exe, Firmware: *fw, Keep: *keep}, stdout)
}
