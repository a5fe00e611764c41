package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

var (
	errNotFound        = errors.New("file not found")
	errAccessViolation = errors.New("access violation")
)

// cleanName maps the filename of a read request onto a path relative to every root. The policy,
// chosen for what netboot firmware sends:
//
//   - Backslashes are separators. PXE ROMs and WDS-style boot programs send "boot\x64\wdsnbp.com";
//     mapping "\" to "/" (rather than keeping it as a name byte) serves them and also makes
//     "..\..\x" a ".." component that the next rule refuses.
//   - One leading "/" means the TFTP root: most ROMs send "pxelinux.0", some send "/ipxe.efi". A
//     name that is still absolute after that ("//etc/passwd") is refused.
//   - Any ".." component is refused, wherever it is and even if it would stay inside the root. So
//     are empty and "." components, a trailing "/", control bytes and invalid UTF-8: the result must
//     satisfy fs.ValidPath. Symlinks are resolved later by os.Root, which refuses any that leave it.
func cleanName(name string) (string, error) {
	p := strings.ReplaceAll(name, `\`, "/")
	p = strings.TrimPrefix(p, "/")
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%w: absolute path", errAccessViolation)
	}
	for elem := range strings.SplitSeq(p, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: %q component", errAccessViolation, "..")
		}
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control byte in name", errAccessViolation)
		}
	}
	if p == "." || !fs.ValidPath(p) {
		return "", fmt.Errorf("%w: not a clean relative path", errAccessViolation)
	}
	return p, nil
}

// open finds name in the first root that holds it and opens it read-only. It returns errNotFound
// when no root has it, and errAccessViolation (wrapped with the reason) when the name is refused,
// a symlink leaves its root, or the first match is not a regular file.
func (s *Server) open(name string) (*os.File, int64, error) {
	rel, err := cleanName(name)
	if err != nil {
		return nil, 0, err
	}
	for _, root := range s.roots {
		// O_NONBLOCK so that a FIFO planted in a root cannot block the open; it is refused below.
		f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue // not in this root: try the next one
		}
		if err != nil {
			// os.Root's "path escapes from parent" (a symlink leaving the root), ELOOP, EACCES.
			return nil, 0, fmt.Errorf("%w: %v", errAccessViolation, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("stat %s: %w", rel, err)
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return nil, 0, fmt.Errorf("%w: %s is not a regular file", errAccessViolation, rel)
		}
		return f, fi.Size(), nil
	}
	return nil, 0, errNotFound
}
