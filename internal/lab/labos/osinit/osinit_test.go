package osinit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/lab/labos"
)

func TestParseCmdline(t *testing.T) {
	cfg, err := ParseCmdline(`BOOT_IMAGE=/vmlinuz console=ttyS0 imaged.mode=os "imaged.url=http://10.99.0.1:8080/x" ` +
		`imaged.image_size=67108864 imaged.ready_port=2345 imaged.disk=/dev/nvme0n1 imaged.mac=52:54:00:99:00:41 imaged.debug=1 -- imaged.ready_port=1`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL.String() != "http://10.99.0.1:8080/x" || cfg.ImageSize != 64<<20 || cfg.ReadyPort != 2345 ||
		cfg.Disk != "/dev/nvme0n1" || cfg.MAC.String() != "52:54:00:99:00:41" {
		t.Errorf("got %+v", cfg)
	}
	cfg, err = ParseCmdline("imaged.url=https://imaged.example imaged.image_size=1 imaged.image_size=512")
	if err != nil || cfg.ReadyPort != 0 || cfg.ImageSize != 512 || cfg.Disk != "" || cfg.MAC != nil {
		t.Errorf("defaults and last-wins: %+v %v", cfg, err)
	}
	cfg.setDefaults()
	if cfg.ReadyPort != labos.DefaultReadyPort || cfg.VendorClass != "imaged-os" {
		t.Errorf("defaults: %+v", cfg)
	}
}

// Each bad value is named in the error with what was expected.
func TestParseCmdlineErrors(t *testing.T) {
	const ok = "imaged.url=http://10.99.0.1:8080 imaged.image_size=67108864 "
	for _, tc := range []struct{ cmdline, want string }{
		{"console=ttyS0", "lacks imaged.url and imaged.image_size"},
		{"imaged.url=http://x:1", "lacks imaged.image_size"},
		{"imaged.image_size=5", "lacks imaged.url"},
		{ok + "imaged.url=10.99.0.1:8080", `imaged.url="10.99.0.1:8080": want http://host[:port]`},
		{ok + "imaged.url=ftp://x", `imaged.url="ftp://x"`},
		{ok + "imaged.url=http://", `imaged.url="http://"`},
		{ok + "imaged.url=http://u:p@x", `imaged.url="http://u:p@x"`},
		{ok + "imaged.image_size=64M", `imaged.image_size="64M": want the image's size in bytes`},
		{ok + "imaged.image_size=0", `imaged.image_size="0"`},
		{ok + "imaged.image_size=-5", `imaged.image_size="-5"`},
		{ok + "imaged.image_size", `imaged.image_size=""`},
		{ok + "imaged.ready_port=0", `imaged.ready_port="0": want a TCP port, 1 to 65535`},
		{ok + "imaged.ready_port=65536", `imaged.ready_port="65536"`},
		{ok + "imaged.ready_port=ssh", `imaged.ready_port="ssh"`},
		{ok + "imaged.disk=vda", `imaged.disk="vda": want a whole disk's device node`},
		{ok + "imaged.disk=/dev/", `imaged.disk="/dev/"`},
		{ok + "imaged.disk=/dev/../etc/passwd", `imaged.disk="/dev/../etc/passwd"`},
		{ok + "imaged.mac=52:54:00", `imaged.mac="52:54:00" is not an Ethernet MAC`},
		{ok + "imaged.mac=00:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:01", `imaged.mac="00:00`},
	} {
		_, err := ParseCmdline(tc.cmdline)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.cmdline, err, tc.want)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("imaged.url=http://10.99.0.1:8080 imaged.image_size=67108864 imaged.ready_port=2222")
	f.Add(`"imaged.url=http://x" imaged.image_size=1 imaged.mac=52:54:00:99:00:41 -- x`)
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseCmdline(s)
		if err != nil {
			return
		}
		if cfg.URL == nil || cfg.ImageSize <= 0 || cfg.ReadyPort < 0 || cfg.ReadyPort > 65535 {
			t.Fatalf("accepted %q as %+v", s, cfg)
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("accepted %q but validate says %v", s, err)
		}
	})
}

// The os mode reads back the command line that the builder writes into syslinux.cfg.
func TestParsesBuildCmdline(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	res, err := labos.Build(context.Background(), labos.BuildOptions{Output: filepath.Join(dir, "os.img"), Size: 8 << 20,
		URL: testURL(), ReadyPort: 2345, ExtraArgs: []string{"imaged.mac=52:54:00:99:00:41"},
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")})
	if errors.Is(err, labos.ErrMissingTool) {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseCmdline(res.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL.String() != "http://10.99.0.1:8080" || cfg.ImageSize != 8<<20 || cfg.ReadyPort != 2345 || cfg.MAC.String() != "52:54:00:99:00:41" {
		t.Errorf("ParseCmdline(%q) = %+v", res.Cmdline, cfg)
	}
	if !strings.Contains(res.Cmdline, "imaged.mode="+Mode().Name) {
		t.Errorf("the image's command line %q does not select this mode (%q)", res.Cmdline, Mode().Name)
	}
}
