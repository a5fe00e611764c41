package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/imaged/imaged/internal/atomicfile"
	"github.com/imaged/imaged/internal/config"
)

// syncBootPrograms copies the configured network boot programs (undionly.kpxe, ipxe.efi, …)
// from boot.ipxe_dir into boot.assets_dir, following symlinks, when they are missing there or
// differ. Debian's ipxe package links ipxe.efi to /boot/ipxe.efi; serving the link's target
// directory would expose the host's /boot, so the assets directory holds its own copies instead,
// and TFTP and HTTP serve only that directory. Each copy is written atomically and its SHA-256
// logged, so that what blades are given is on record.
func syncBootPrograms(cfg *config.File, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.Boot.AssetsDir, 0o755); err != nil {
		return fmt.Errorf("boot.assets_dir: %w", err)
	}
	for _, name := range []string{cfg.Boot.BIOSFile, cfg.Boot.UEFIFile, cfg.Boot.ARM64File} {
		if name == "" {
			continue
		}
		src := filepath.Join(cfg.Boot.IPXEDir, name)
		dst := filepath.Join(cfg.Boot.AssetsDir, name)
		want, err := os.ReadFile(src)
		if err != nil {
			if _, serr := os.Stat(dst); serr == nil {
				log.Warn("boot program missing from boot.ipxe_dir; serving the copy already in boot.assets_dir", "file", name, "err", err)
				continue
			}
			return fmt.Errorf("boot program %s: %w (install Debian's ipxe package, or set boot.ipxe_dir)", name, err)
		}
		if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
			continue
		}
		if err := atomicfile.WriteFile(dst, want, 0o644); err != nil {
			return fmt.Errorf("copy %s into boot.assets_dir: %w", name, err)
		}
		sum := sha256.Sum256(want)
		log.Info("boot program installed", "file", dst, "from", src, "bytes", len(want), "sha256", hex.EncodeToString(sum[:]))
	}
	return nil
}
