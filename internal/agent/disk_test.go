package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSys builds a /sys/block-like tree: each disk is a directory under devices/ (with its PCI
// path) and a symlink in block/.
func fakeSys(t *testing.T, disks map[string][3]string) string {
	t.Helper()
	root := t.TempDir()
	block := filepath.Join(root, "block")
	os.MkdirAll(block, 0o755)
	for name, v := range disks { // v: sectors, serial, pci address
		dev := filepath.Join(root, "devices/pci0000:00", v[2], "block", name)
		os.MkdirAll(filepath.Join(dev, "device"), 0o755)
		os.WriteFile(filepath.Join(dev, "size"), []byte(v[0]+"\n"), 0o644)
		rem := "0"
		if strings.HasPrefix(name, "sdz") {
			rem = "1"
		}
		os.WriteFile(filepath.Join(dev, "removable"), []byte(rem+"\n"), 0o644)
		if v[1] != "" {
			os.WriteFile(filepath.Join(dev, "serial"), []byte(v[1]+"\n"), 0o644)
		}
		os.Symlink(dev, filepath.Join(block, name))
	}
	return block
}

func TestPickDisk(t *testing.T) {
	const gib = 1 << 30
	block := fakeSys(t, map[string][3]string{
		"vda":     {"4194304", "SYS1", "0000:00:04.0"}, // 2 GiB
		"vdb":     {"1048576", "DATA", "0000:00:05.0"}, // 512 MiB
		"sdz":     {"8388608", "USB", "0000:00:06.0"},  // 4 GiB removable
		"loop0":   {"8388608", "", "virtual"},
		"nvme0n1": {"2097152", "NV1", "0000:00:07.0"}, // 1 GiB
	})
	disks, err := ListDisks(block)
	if err != nil || len(disks) != 4 {
		t.Fatalf("%d disks, %v", len(disks), err)
	}
	cases := []struct {
		serial, byPath string
		size           int64
		want           string
		err            error
	}{
		{"", "", 1536 << 20, "/dev/vda", nil},                    // only vda is large enough and fixed
		{"", "", 256 << 20, "", ErrAmbiguousDisk},                // vda, vdb and nvme0n1 all fit
		{"DATA", "", 256 << 20, "/dev/vdb", nil},                 // by serial
		{"", "pci-0000:00:07.0", 256 << 20, "/dev/nvme0n1", nil}, // by path
		{"", "pci-0000:00:07.0", 2 * gib, "", ErrNoDisk},         // named but too small
		{"USB", "", 256 << 20, "/dev/sdz", nil},                  // a removable disk only when named
		{"", "", 3 * gib, "", ErrNoDisk},                         // only the removable one is large enough
		{"NOPE", "", 1, "", ErrNoDisk},
	}
	for _, c := range cases {
		d, err := PickDisk(disks, c.serial, c.byPath, c.size)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("serial %q path %q size %d: %v, want %v", c.serial, c.byPath, c.size, err, c.err)
			}
			continue
		}
		if err != nil || d.Path != c.want {
			t.Errorf("serial %q path %q size %d: %s %v, want %s", c.serial, c.byPath, c.size, d.Path, err, c.want)
		}
	}
}
