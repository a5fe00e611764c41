package tftp

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused as an access violation
	}{
		{"pxelinux.0", "pxelinux.0"},
		{"/ipxe.efi", "ipxe.efi"},                      // some ROMs send a leading slash
		{`boot\x64\wdsnbp.com`, "boot/x64/wdsnbp.com"}, // Windows-style separators
		{`\boot\bcd`, "boot/bcd"},
		{"a/b/c", "a/b/c"},
		{"../etc/passwd", ""},
		{"/../x", ""},
		{"a/../../x", ""},
		{"a/../b", ""}, // ".." is refused even when it would stay inside
		{`..\..\etc\passwd`, ""},
		{"//etc/passwd", ""}, // still absolute after dropping one slash
		{`\\server\share`, ""},
		{"", ""},
		{"/", ""},
		{".", ""},
		{"./x", ""},
		{"a//b", ""},
		{"dir/", ""},
		{"..", ""},
		{"a/..", ""},
		{"x\x01y", ""},
		{"x\x7fy", ""},
		{"\xff\xfe", ""}, // not UTF-8
	} {
		got, err := cleanName(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, errAccessViolation) {
				t.Errorf("cleanName(%q) = %q, %v; want an access violation", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzName checks that no request name, however odd, panics, resolves to a path with a ".."
// component or an absolute path, or opens a file outside the root — through a symlink either.
func FuzzName(f *testing.F) {
	for _, s := range []string{
		"pxelinux.0", "/ipxe.efi", "../etc/passwd", "/../x", "a/../../x", `..\..\x`, "//etc/passwd",
		"escape", "escape/secret", "inside", "sub/f", "sub/../f", "./f", "f\x00", "/", "",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	root := filepath.Join(dir, "root")
	mustMkdirAll(f, filepath.Join(root, "sub"))
	mustWrite(f, filepath.Join(root, "f"), "inside")
	mustWrite(f, filepath.Join(root, "sub", "f"), "inside")
	mustWrite(f, filepath.Join(dir, "secret"), "SECRET")
	mustSymlink(f, "../secret", filepath.Join(root, "escape"))
	mustSymlink(f, dir, filepath.Join(root, "escapedir"))
	mustSymlink(f, "sub/f", filepath.Join(root, "inside"))
	s := &Server{}
	r, err := os.OpenRoot(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	s.roots = []*os.Root{r}

	f.Fuzz(func(t *testing.T, name string) {
		if p, err := cleanName(name); err == nil {
			if !fs.ValidPath(p) || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
				t.Fatalf("cleanName(%q) = %q: not a clean relative path", name, p)
			}
			for e := range strings.SplitSeq(p, "/") {
				if e == ".." {
					t.Fatalf("cleanName(%q) = %q: has a .. component", name, p)
				}
			}
		}
		file, _, err := s.open(name)
		if err != nil {
			if !errors.Is(err, errNotFound) && !errors.Is(err, errAccessViolation) {
				t.Fatalf("open(%q): unexpected error class: %v", name, err)
			}
			return
		}
		defer file.Close()
		b, err := io.ReadAll(file)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "inside" {
			t.Fatalf("open(%q) read %q: a file outside the root", name, b)
		}
	})
}

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustMkdirAll(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
