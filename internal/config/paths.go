package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// holding is something imaged keeps that TFTP and HTTP must never serve.
type holding struct {
	path string // as configured or defaulted
	what string // for the message: "state_dir's imaged.db"
}

// holdings lists what imaged keeps in and beside state_dir: the bbolt database, the image store,
// the AMI push journals (names cmd/imaged joins to state_dir: keep them in step), tls (kept free
// for the server's certificate and key), the control socket and the smoke reports (configurable,
// by default in state_dir).
func holdings(f *File) []holding {
	var hs []holding
	for _, name := range []string{"imaged.db", "images", "ami-push", "tls"} {
		hs = append(hs, holding{filepath.Join(f.StateDir, name), "state_dir's " + name})
	}
	return append(hs,
		holding{f.HTTP.ControlSocket, "http.control_socket"},
		holding{f.EC2.Smoke.ReportDir, "ec2.smoke.report_dir"})
}

// validatePaths refuses a boot.assets_dir that would serve what imaged keeps: everything in it is
// served to anyone over TFTP and /boot/assets/. It must not be state_dir, hold state_dir or any
// holding, or lie inside a holding. The default <state_dir>/boot is a directory of its own and
// fine. Paths are compared absolute and cleaned, with symlinks resolved as far as they exist.
//
// boot.ipxe_dir is only read: serve copies the boot programs named by bios_file, uefi_file and
// arm64_file from it into assets_dir. So those must be plain file names, and none may name a
// holding (ipxe_dir: /var/lib/imaged with uefi_file: imaged.db would publish the database).
func (v *validator) validatePaths(f *File) {
	b := &f.Boot
	fix := fmt.Sprintf("use a directory of its own, like the default %s", filepath.Join(f.StateDir, "boot"))
	state, assets := resolve(f.StateDir), resolve(b.AssetsDir)
	switch {
	case assets == state:
		v.fail("boot.assets_dir", "%s is state_dir itself, whose imaged.db and images would be served over TFTP and HTTP (%s)", b.AssetsDir, fix)
	case within(assets, state):
		v.fail("boot.assets_dir", "%s holds state_dir %s, whose imaged.db and images would be served over TFTP and HTTP (%s)", b.AssetsDir, f.StateDir, fix)
	default:
		for _, h := range holdings(f) {
			switch p := resolve(h.path); {
			case within(p, assets):
				v.fail("boot.assets_dir", "%s is inside %s (%s): what imaged keeps there would be served over TFTP and HTTP (%s)", b.AssetsDir, h.what, h.path, fix)
			case within(assets, p):
				v.fail("boot.assets_dir", "%s holds %s (%s), which would then be served over TFTP and HTTP (%s)", b.AssetsDir, h.what, h.path, fix)
			}
		}
	}

	for _, p := range []struct{ key, name string }{
		{"boot.bios_file", b.BIOSFile}, {"boot.uefi_file", b.UEFIFile}, {"boot.arm64_file", b.ARM64File},
	} {
		if p.name == "" {
			continue
		}
		if strings.ContainsAny(p.name, `/\`) || p.name == "." || p.name == ".." {
			v.fail(p.key, "%q is not a file name: boot programs are copied by name from boot.ipxe_dir into boot.assets_dir (write it without a directory, like ipxe.efi)", p.name)
			continue
		}
		src := resolve(filepath.Join(b.IPXEDir, p.name))
		for _, h := range holdings(f) {
			if within(resolve(h.path), src) {
				v.fail("boot.ipxe_dir", "serve would copy %s, in %s, into boot.assets_dir, where it is served (point ipxe_dir at the boot programs, like Debian's /usr/lib/ipxe)", filepath.Join(b.IPXEDir, p.name), h.what)
				break
			}
		}
	}
}

// within reports whether p is dir or inside it; both are absolute and clean.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolve makes p absolute and clean and resolves the symlinks of its longest existing prefix,
// so that a path reached through a link compares equal to its target.
func resolve(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	rest := ""
	for dir := abs; ; {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return abs
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}
