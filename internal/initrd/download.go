package initrd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
)

// DownloadKernel makes sure dir holds Debian's current kernel package for this architecture and
// returns its path. The package is the linux-image-<ver>-<arch> that the meta-package
// linux-image-<arch> depends on (`apt-cache depends linux-image-amd64`); a .deb of it already in
// dir is reused. apt-get verifies the download against the signed archive index; it lands in a
// temporary directory first, so an interrupted download never looks like a package.
func DownloadKernel(ctx context.Context, dir string) (string, error) {
	arch := runtime.GOARCH // Debian's names match Go's for amd64 and arm64
	meta := "linux-image-" + arch
	out, err := command(ctx, "", "apt-cache", "depends", meta)
	if err != nil {
		return "", fmt.Errorf("initrd: %w", err)
	}
	pkg := kernelPackage(out, arch)
	if pkg == "" {
		return "", fmt.Errorf("initrd: apt-cache depends %s names no linux-image-<ver>-%s (run apt-get update first)", meta, arch)
	}
	if p, ok := findDeb(dir, pkg, arch); ok {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("initrd: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".download-*")
	if err != nil {
		return "", fmt.Errorf("initrd: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt's _apt sandbox user cannot write to a root-owned temp dir; apt then downloads as root
	// and says so on stderr, which is harmless.
	os.Chmod(tmp, 0o755)
	if _, err := command(ctx, tmp, "apt-get", "download", pkg); err != nil {
		return "", fmt.Errorf("initrd: %w", err)
	}
	got, ok := findDeb(tmp, pkg, arch)
	if !ok {
		return "", fmt.Errorf("initrd: apt-get download %s wrote no %s_*.deb", pkg, pkg)
	}
	dst := filepath.Join(dir, filepath.Base(got))
	if err := os.Rename(got, dst); err != nil {
		return "", fmt.Errorf("initrd: %w", err)
	}
	return dst, nil
}

var kernelDep = regexp.MustCompile(`^\s*Depends:\s*(linux-image-[0-9]\S*)`)

// kernelPackage picks the versioned kernel package out of `apt-cache depends` output.
func kernelPackage(aptCacheDepends []byte, arch string) string {
	sc := bufio.NewScanner(bytes.NewReader(aptCacheDepends))
	for sc.Scan() {
		if m := kernelDep.FindStringSubmatch(sc.Text()); m != nil && strings.HasSuffix(m[1], "-"+arch) {
			return m[1]
		}
	}
	return ""
}

func findDeb(dir, pkg, arch string) (string, bool) {
	ms, _ := filepath.Glob(filepath.Join(dir, pkg+"_*_"+arch+".deb"))
	if len(ms) == 0 {
		return "", false
	}
	return ms[len(ms)-1], true // builds of one ABI are interchangeable; take the last by name
}

func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
