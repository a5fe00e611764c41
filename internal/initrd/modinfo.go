package initrd

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// modinfo is what a module's .modinfo section says, the same data `modinfo` prints: NUL-separated
// key=value strings that modpost writes ("depends=virtio_ring,virtio", "vermagic=6.1.0-56-amd64
// SMP ...", "softdep=pre: crct10dif").
type modinfo struct {
	name     string   // the name= key (kernel 4.x+), normalized
	depends  []string // normalized names, in the order modpost wrote them
	softPre  []string // softdep "pre:" names, normalized
	vermagic string   // the first word: the kernel release the module was built for
	machine  elf.Machine
}

func parseModinfo(ko []byte) (modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return modinfo{}, fmt.Errorf("not an ELF file: %w", err)
	}
	if f.Type != elf.ET_REL {
		return modinfo{}, fmt.Errorf("not a kernel module (ELF type %v, want ET_REL)", f.Type)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return modinfo{}, errors.New("not a kernel module (no .modinfo section)")
	}
	data, err := sec.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("read .modinfo: %w", err)
	}
	mi := modinfo{machine: f.Machine}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue // padding between strings
		}
		switch k {
		case "name":
			mi.name = normalizeName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.depends = append(mi.depends, normalizeName(d))
				}
			}
		case "softdep":
			mi.softPre = append(mi.softPre, parseSoftdepPre(v)...)
		case "vermagic":
			if fs := strings.Fields(v); len(fs) > 0 {
				mi.vermagic = fs[0]
			}
		}
	}
	return mi, nil
}

// parseSoftdepPre returns the "pre:" names of a softdep value such as "pre: crc32c post: foo".
func parseSoftdepPre(v string) []string {
	var out []string
	pre := false
	for _, w := range strings.Fields(v) {
		switch w {
		case "pre:":
			pre = true
		case "post:":
			pre = false
		default:
			if pre {
				out = append(out, normalizeName(w))
			}
		}
	}
	return out
}

// isModuleFile reports whether a file name is a kernel module, compressed or not.
func isModuleFile(name string) bool {
	for _, s := range []string{".ko", ".ko.zst", ".ko.gz", ".ko.xz"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// decompressModule returns the plain ELF of a module file. The initrd always holds plain .ko
// files, so the agent needs no decompressor and any kernel loads them with finit_module(2).
// Newer kernels compress modules (CONFIG_MODULE_COMPRESS_*): zstd and gzip are decoded here; xz
// (Debian trixie's choice) needs the xz tool, as Go has no xz decoder in this module's deps.
func decompressModule(ctx context.Context, name string, b []byte) ([]byte, error) {
	switch {
	case strings.HasSuffix(name, ".ko"):
		return b, nil
	case strings.HasSuffix(name, ".ko.zst"):
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		out, err := d.DecodeAll(b, nil)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	case strings.HasSuffix(name, ".ko.gz"):
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return out, nil
	case strings.HasSuffix(name, ".ko.xz"):
		if _, err := exec.LookPath("xz"); err != nil {
			return nil, errors.New("xz-compressed modules (.ko.xz) are unsupported without the xz tool (apt-get install xz-utils)")
		}
		cmd := exec.CommandContext(ctx, "xz", "--decompress", "--stdout")
		cmd.Stdin = bytes.NewReader(b)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("xz --decompress: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return out.Bytes(), nil
	}
	return nil, fmt.Errorf("unsupported module file %s", name)
}
