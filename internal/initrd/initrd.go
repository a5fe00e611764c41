// Package initrd builds the netboot initramfs that `imaged initrd build` serves to blades: the
// static agent program (cmd/imaged-agent) as /init, plus the kernel modules the blade needs before
// it can reach the network and its disks, resolved from a Debian kernel package or an extracted
// module tree. The lab builds its test OS's initramfs with it too, around another program.
//
// The archive is a newc cpio with every entry owned by 0:0 and a fixed mtime, in sorted order, so
// the same inputs always give the same bytes (and the same SHA-256). The layout is what
// internal/agent expects at boot:
//
//	/init                   the program, imaged-agent (0755)
//	/modules.order          module names, one a line, dependencies first
//	/lib/modules/<name>.ko  every module, uncompressed
//	/dev /dev/console /proc /sys /tmp
//
// cmd/imaged and the lab (internal/lab, internal/lab/labos) import this package.
package initrd

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// DefaultModules is the module set used when Options.ModuleNames is nil: QEMU's devices (virtio,
// e1000/e1000e) and the NICs and disk controllers common in blades. A name ending in "?" is
// optional: it is skipped with a note when the kernel does not have it, where a plain name is an
// error. Dependencies are added automatically and need not be listed.
var DefaultModules = []string{
	// QEMU (virtio_rng seeds the kernel's CRNG where the CPU has no RDRAND, as under TCG) and
	// the disks every machine has.
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng", "e1000", "e1000e",
	"nvme", "ahci", "sd_mod",
	// Blade NICs.
	"igb?", "ixgbe?", "i40e?", "ice?", "bnxt_en?", "tg3?", "mlx5_core?", "mlx4_en?",
	// Blade RAID/HBA controllers (Dell PERC, Broadcom SAS, HPE Smart Array).
	"megaraid_sas?", "mpt3sas?", "smartpqi?",
}

// ErrModuleNotFound is returned (wrapped) when a requested module, or a dependency of one, is
// neither a module file nor built into the kernel.
var ErrModuleNotFound = errors.New("initrd: module not found")

// AgentProgram is the agent's main package, the program of the agent's initramfs.
const AgentProgram = "github.com/imaged/imaged/cmd/imaged-agent"

// Options says what to build.
type Options struct {
	Binary      string       // the static program placed as /init
	Program     string       // if set, the Go main package Binary must be built from (AgentProgram)
	Modules     ModuleSource // where kernel modules (and vmlinuz) come from
	ModuleNames []string     // modules to include; nil means DefaultModules; "name?" is optional
	Compression string       // "gzip" (also when empty) or "zstd"
	Output      string       // the initramfs, written atomically
	KernelOut   string       // optional: also copy the kernel (boot/vmlinuz-<ver>) here, atomically
}

// File is one entry of the archive.
type File struct {
	Name string      // path inside the archive, without a leading slash
	Mode fs.FileMode // type and permission bits
	Size int64
}

// Result describes what Build wrote.
type Result struct {
	Output           string
	KernelVersion    string   // e.g. 6.1.0-56-amd64
	Modules          []string // module names in load order: dependencies first
	Notes            []string // what was skipped and why (builtin, optional and absent, softdeps)
	Files            []File   // archive entries in archive order
	UncompressedSize int64    // bytes of the cpio archive
	Size             int64    // bytes of Output
	SHA256           string   // hex SHA-256 of Output
	Kernel           string   // KernelOut when written
	KernelSHA256     string   // hex SHA-256 of the kernel copied to KernelOut
}

// Build resolves the modules, then writes the compressed newc archive to opt.Output (and the
// kernel to opt.KernelOut when set). Nothing is left at either path unless everything succeeded.
func Build(ctx context.Context, opt Options) (Result, error) {
	comp, err := compressorFor(opt.Compression)
	if err != nil {
		return Result{}, err
	}
	if opt.Output == "" {
		return Result{}, errors.New("initrd: Output is required")
	}
	bin, binMachine, err := readInitBinary(opt.Binary, opt.Program)
	if err != nil {
		return Result{}, err
	}
	src, err := opt.Modules.open()
	if err != nil {
		return Result{}, err
	}
	idx, err := src.index(ctx)
	if err != nil {
		return Result{}, err
	}
	names := opt.ModuleNames
	if names == nil {
		names = DefaultModules
	}
	mods, notes, err := resolve(ctx, src, idx, names)
	if err != nil {
		return Result{}, err
	}
	for _, m := range mods {
		if m.info.machine != binMachine {
			return Result{}, fmt.Errorf("initrd: %s is for %v but module %s is for %v: build imaged for the kernel's architecture",
				opt.Binary, binMachine, m.name, m.info.machine)
		}
	}
	kernel, err := src.fetch(ctx, idx, mods, opt.KernelOut != "")
	if err != nil {
		return Result{}, err
	}

	res := Result{Output: opt.Output, KernelVersion: idx.version, Notes: notes}
	entries := baseEntries(bin)
	var order bytes.Buffer
	for _, m := range mods {
		res.Modules = append(res.Modules, m.name)
		order.WriteString(m.name + "\n")
		entries = append(entries, entry{name: "lib/modules/" + m.name + ".ko", mode: fs.FileMode(0o644), data: m.data})
	}
	entries = append(entries, entry{name: "modules.order", mode: 0o644, data: order.Bytes()})
	sortEntries(entries)
	for _, e := range entries {
		res.Files = append(res.Files, File{Name: e.name, Mode: e.mode, Size: int64(len(e.data))})
	}

	var kernelTmp *pendingFile
	if opt.KernelOut != "" {
		kernelTmp, err = stageFile(opt.KernelOut, 0o644, func(w io.Writer) error {
			_, err := w.Write(kernel)
			return err
		})
		if err != nil {
			return Result{}, fmt.Errorf("initrd: write kernel: %w", err)
		}
		defer kernelTmp.discard()
		res.Kernel = opt.KernelOut
		res.KernelSHA256 = kernelTmp.sha256
	}
	out, err := stageFile(opt.Output, 0o644, func(w io.Writer) error {
		cw, err := comp(w)
		if err != nil {
			return err
		}
		n, err := writeArchive(cw, entries)
		if err != nil {
			return err
		}
		res.UncompressedSize = n
		return cw.Close()
	})
	if err != nil {
		return Result{}, fmt.Errorf("initrd: write %s: %w", opt.Output, err)
	}
	defer out.discard()
	res.Size, res.SHA256 = out.size, out.sha256
	if err := out.commit(); err != nil {
		return Result{}, fmt.Errorf("initrd: %w", err)
	}
	if kernelTmp != nil {
		if err := kernelTmp.commit(); err != nil {
			return Result{}, fmt.Errorf("initrd: %w", err)
		}
	}
	return res, nil
}

// baseEntries are the directories and files of every initramfs, around the modules.
func baseEntries(bin []byte) []entry {
	return []entry{
		{name: "dev", mode: fs.ModeDir | 0o755},
		// The kernel opens /dev/console for /init's stdin/out/err before /init can mount
		// devtmpfs; Debian's built-in initramfs has this node, but a kernel without one would
		// start /init with no console at all.
		{name: "dev/console", mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, rdevMajor: 5, rdevMinor: 1},
		{name: "init", mode: 0o755, data: bin},
		{name: "lib", mode: fs.ModeDir | 0o755},
		{name: "lib/modules", mode: fs.ModeDir | 0o755},
		{name: "proc", mode: fs.ModeDir | 0o755},
		{name: "sys", mode: fs.ModeDir | 0o755},
		{name: "tmp", mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
}

// readInitBinary reads the binary that becomes /init and checks that the kernel can run it
// without any library: an ELF executable with no program interpreter (PT_INTERP), i.e. static.
// A dynamically linked /init would fail at boot with only "No working init found". When program
// is set, the binary's Go build information must name it as its main package: imaged's server
// binary as /init would print its usage and exit, and the kernel panics when init exits.
func readInitBinary(p, program string) ([]byte, elf.Machine, error) {
	if p == "" {
		return nil, 0, errors.New("initrd: Binary is required")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, 0, fmt.Errorf("initrd: read binary: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, 0, fmt.Errorf("initrd: %s is not an ELF executable: %w", p, err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, 0, fmt.Errorf("initrd: %s is not an executable (ELF type %v)", p, f.Type)
	}
	if program != "" {
		bi, err := buildinfo.Read(bytes.NewReader(b))
		if err != nil {
			return nil, 0, fmt.Errorf("initrd: %s is not a Go program (%v); want a build of %s (go build %s)", p, err, program, program)
		}
		if bi.Path != program {
			return nil, 0, fmt.Errorf("initrd: %s is a build of %s, not of %s (go build %s)", p, bi.Path, program, program)
		}
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, 0, fmt.Errorf("initrd: %s is dynamically linked (it has an ELF interpreter); build it with CGO_ENABLED=0", p)
		}
	}
	return b, f.Machine, nil
}

// normalizeName gives the kernel's name for a module: the file name without .ko, with '-' as
// '_' (the kernel treats them alike; modinfo "depends=" uses file names such as nvme-core).
func normalizeName(s string) string {
	s = path.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}
