package labos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/atomicfile"
	"github.com/imaged/imaged/internal/initrd"
)

// DefaultModules are the kernel modules of the image's initramfs when BuildOptions.Modules is
// nil: QEMU's virtio devices and e1000, the SATA and NVMe disk drivers, and the ACPI power button
// with evdev so that a BMC's graceful shutdown powers the machine off.
var DefaultModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "e1000",
	"ahci", "sd_mod", "nvme", "button", "evdev"}

// DefaultSize is the image's size when BuildOptions.Size is 0.
const DefaultSize = 64 << 20

// partStart is where the FAT partition starts: 1 MiB, as every partitioning tool aligns today.
const partStart = 1 << 20

// MBRCode is SYSLINUX's MBR boot code (Debian package syslinux-common): it boots the partition
// marked active.
const MBRCode = "/usr/lib/syslinux/mbr/mbr.bin"

// ErrMissingTool is returned (wrapped) when a program or file that Build needs is not installed;
// the message names the Debian package.
var ErrMissingTool = errors.New("labos: missing build tool")

// BuildOptions says what image to build.
type BuildOptions struct {
	Output    string   // the raw disk image, written atomically (temporary file, then rename)
	Size      int64    // bytes, a multiple of 1 MiB; default DefaultSize
	URL       *url.URL // imaged.url (required)
	ReadyPort int      // imaged.ready_port; default DefaultReadyPort
	ExtraArgs []string // more kernel parameters, such as imaged.debug=1 or imaged.mac=…

	// The kernel and the initramfs come either from Binary and KernelDeb (Build makes the
	// initramfs with internal/initrd: Binary as /init, Modules from the package) or from Kernel
	// and Initrd, files built before.
	Binary    string   // the static imaged binary
	KernelDeb string   // Debian's linux-image-<ver>-<arch>_*.deb, e.g. from initrd.DownloadKernel
	Modules   []string // default DefaultModules
	Kernel    string   // a kernel (vmlinuz)
	Initrd    string   // an initramfs whose /init runs the os mode

	// Reproducibility: the same inputs give the same bytes. These fix what the tools would
	// otherwise take from the clock or a random source.
	Epoch    time.Time // every timestamp in the file system; default 2000-01-01 00:00:00 UTC
	VolumeID uint32    // the FAT volume serial number; default 0x494d4744 ("IMGD")
	DiskID   uint32    // the MBR disk signature; default 0x494d4744

	TempDir string // scratch space, about Size bytes; default Output's directory
}

// Result describes the image Build wrote.
type Result struct {
	Path           string
	Size           int64
	SHA256         string        // hex
	Digest         images.Digest // the image's identity, "sha256:<hex>"
	Cmdline        string        // the kernel command line of syslinux.cfg
	KernelVersion  string        // when the initramfs was built from KernelDeb
	Modules        []string      // the initramfs's modules, in load order, when built here
	KernelSize     int64         // bytes of vmlinuz in the image
	InitrdSize     int64         // bytes of initrd.img in the image
	FileSystem     string        // FAT12, FAT16 or FAT32
	PartitionStart int64         // bytes from the start of the image
}

// Build writes a raw disk image that boots the os mode on a BIOS machine: an MBR with SYSLINUX's
// boot code and one active FAT partition from 1 MiB to the end, holding SYSLINUX (ldlinux.sys,
// ldlinux.c32), the kernel, the initramfs and a syslinux.cfg whose APPEND line is
//
//	console=ttyS0 imaged.mode=os imaged.url=<URL> imaged.image_size=<Size> imaged.ready_port=<port>
//
// It uses mkfs.fat (dosfstools), syslinux and mcopy (syslinux, mtools) on a file: no loop
// device, no mount, no root. The output is byte-for-byte the same for the same inputs: the
// file system's serial, timestamps and time zone are fixed, the files are copied in sorted order,
// and the tools run with a clean environment (TZ=UTC, SOURCE_DATE_EPOCH, no mtools config).
func Build(ctx context.Context, opt BuildOptions) (Result, error) {
	if err := opt.setDefaults(); err != nil {
		return Result{}, err
	}
	tools, err := findTools()
	if err != nil {
		return Result{}, err
	}
	tmpDir := opt.TempDir
	if tmpDir == "" {
		tmpDir = filepath.Dir(opt.Output)
	}
	work, err := os.MkdirTemp(tmpDir, ".labos-*")
	if err != nil {
		return Result{}, fmt.Errorf("labos: %w", err)
	}
	defer os.RemoveAll(work)

	res := Result{Path: opt.Output, Size: opt.Size, PartitionStart: partStart}
	kernel, initramfs := opt.Kernel, opt.Initrd
	if opt.Binary != "" {
		kernel, initramfs = filepath.Join(work, "vmlinuz"), filepath.Join(work, "initrd.img")
		ir, err := initrd.Build(ctx, initrd.Options{
			Binary:      opt.Binary,
			Modules:     initrd.ModuleSource{Deb: opt.KernelDeb},
			ModuleNames: opt.Modules,
			Compression: "zstd",
			Output:      initramfs,
			KernelOut:   kernel,
		})
		if err != nil {
			return Result{}, fmt.Errorf("labos: initramfs: %w", err)
		}
		res.KernelVersion, res.Modules = ir.KernelVersion, ir.Modules
	}

	res.Cmdline = opt.cmdline()
	files := filepath.Join(work, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		return Result{}, fmt.Errorf("labos: %w", err)
	}
	// The names SYSLINUX reads, in the order they are copied (sorted: the directory entries and
	// clusters are then always laid out alike).
	for _, f := range []struct{ name, src, text string }{
		{name: "initrd.img", src: initramfs},
		{name: "syslinux.cfg", text: syslinuxCfg(res.Cmdline)},
		{name: "vmlinuz", src: kernel},
	} {
		dst := filepath.Join(files, f.name)
		if f.src != "" {
			err = copyFile(f.src, dst)
		} else {
			err = os.WriteFile(dst, []byte(f.text), 0o644)
		}
		if err != nil {
			return Result{}, fmt.Errorf("labos: %s: %w", f.name, err)
		}
		if err := os.Chtimes(dst, opt.Epoch, opt.Epoch); err != nil {
			return Result{}, fmt.Errorf("labos: %w", err)
		}
	}
	for _, f := range []struct {
		name string
		size *int64
	}{{"vmlinuz", &res.KernelSize}, {"initrd.img", &res.InitrdSize}} {
		fi, err := os.Stat(filepath.Join(files, f.name))
		if err != nil {
			return Result{}, fmt.Errorf("labos: %w", err)
		}
		*f.size = fi.Size()
	}

	part := filepath.Join(work, "part.img")
	env := toolEnv(opt.Epoch, work)
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env, cmd.Dir = env, files
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("labos: %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	partKiB := (opt.Size - partStart) / 1024
	if err := run(tools.mkfs, "--invariant", "-C", "-i", fmt.Sprintf("%08x", opt.VolumeID), "-n", "IMAGED-OS",
		"-h", strconv.Itoa(partStart/512), "-g", "255/63", part, strconv.FormatInt(partKiB, 10)); err != nil {
		return Result{}, err
	}
	if err := run(tools.syslinux, "--install", part); err != nil {
		return Result{}, err
	}
	if err := run(tools.mcopy, "-m", "-i", part, "initrd.img", "syslinux.cfg", "vmlinuz", "::/"); err != nil {
		if strings.Contains(err.Error(), "Disk full") {
			return Result{}, fmt.Errorf("labos: a %d MiB image is too small for the kernel and initramfs: %w", opt.Size>>20, err)
		}
		return Result{}, err
	}
	fsType, err := fatType(part)
	if err != nil {
		return Result{}, err
	}
	res.FileSystem = fsType
	code, err := os.ReadFile(tools.mbr)
	if err != nil {
		return Result{}, fmt.Errorf("labos: %w", err)
	}
	mbr, err := makeMBR(code, opt.DiskID, partStart/512, uint32((opt.Size-partStart)/512), partitionType[fsType])
	if err != nil {
		return Result{}, err
	}
	sum, err := assemble(opt.Output, mbr, part, opt.Size)
	if err != nil {
		return Result{}, err
	}
	res.Digest = sum
	res.SHA256 = sum.Hex()
	return res, nil
}

func (o *BuildOptions) setDefaults() error {
	if o.Output == "" {
		return errors.New("labos: BuildOptions.Output is required")
	}
	if o.URL == nil || (o.URL.Scheme != "http" && o.URL.Scheme != "https") || o.URL.Host == "" {
		return fmt.Errorf("labos: BuildOptions.URL %v: want http://host[:port]", o.URL)
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Size < 2*partStart || o.Size%(1<<20) != 0 {
		return fmt.Errorf("labos: image size %d: want a multiple of 1 MiB, at least 2 MiB", o.Size)
	}
	if o.Size > 2<<40 {
		return fmt.Errorf("labos: image size %d: an MBR partition ends at 2 TiB", o.Size)
	}
	if o.ReadyPort == 0 {
		o.ReadyPort = DefaultReadyPort
	}
	if o.ReadyPort < 0 || o.ReadyPort > 65535 {
		return fmt.Errorf("labos: ready port %d out of range", o.ReadyPort)
	}
	switch {
	case o.Binary != "" && (o.Kernel != "" || o.Initrd != ""):
		return errors.New("labos: set Binary and KernelDeb, or Kernel and Initrd, not both")
	case o.Binary != "" && o.KernelDeb == "":
		return errors.New("labos: Binary needs KernelDeb, the kernel package its modules come from")
	case o.Binary == "" && (o.Kernel == "" || o.Initrd == ""):
		return errors.New("labos: set Binary and KernelDeb, or Kernel and Initrd")
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	for _, a := range o.ExtraArgs {
		if a == "" || strings.ContainsAny(a, " \t\n\"") {
			return fmt.Errorf("labos: kernel parameter %q: want one word without spaces or quotes", a)
		}
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if o.Epoch.Year() < 1980 || o.Epoch.Year() > 2107 {
		return fmt.Errorf("labos: Epoch %v is outside FAT's 1980-2107", o.Epoch)
	}
	if o.VolumeID == 0 {
		o.VolumeID = 0x494d4744
	}
	if o.DiskID == 0 {
		o.DiskID = 0x494d4744
	}
	return nil
}

func (o *BuildOptions) cmdline() string {
	args := []string{"console=ttyS0", "imaged.mode=" + ModeName, "imaged.url=" + o.URL.String(),
		"imaged.image_size=" + strconv.FormatInt(o.Size, 10), "imaged.ready_port=" + strconv.Itoa(o.ReadyPort)}
	return strings.Join(append(args, o.ExtraArgs...), " ")
}

// syslinuxCfg boots the one entry at once. SERIAL 0 puts SYSLINUX's own messages on the first
// serial port too, where the lab reads the console.
func syslinuxCfg(cmdline string) string {
	return "SERIAL 0 115200\nDEFAULT imaged-os\nPROMPT 0\nTIMEOUT 0\n\nLABEL imaged-os\n" +
		"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND " + cmdline + "\n"
}

// toolEnv is the whole environment of the tools: nothing of the caller's may change the bytes.
func toolEnv(epoch time.Time, home string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"LC_ALL=C",
		"TZ=UTC", // mtools writes local time
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch.Unix(), 10), // syslinux's and mtools' clock
		"MTOOLSRC=/dev/null",  // no user drive definitions
		"MTOOLS_SKIP_CHECK=1", // a partition file has no partition table to check
	}
}

type tools struct{ mkfs, syslinux, mcopy, mbr string }

func findTools() (tools, error) {
	var t tools
	var missing []string
	for _, x := range []struct {
		dst      *string
		name     string
		pkg      string
		absolute bool
	}{
		{&t.mkfs, "mkfs.fat", "dosfstools", false},
		{&t.syslinux, "syslinux", "syslinux", false},
		{&t.mcopy, "mcopy", "mtools", false},
		{&t.mbr, MBRCode, "syslinux-common", true},
	} {
		var err error
		if x.absolute {
			_, err = os.Stat(x.name)
			*x.dst = x.name
		} else {
			*x.dst, err = exec.LookPath(x.name)
			if err != nil {
				// Debian puts mkfs.fat in /usr/sbin, which a non-root PATH may lack.
				if p := filepath.Join("/usr/sbin", x.name); fileExists(p) {
					*x.dst, err = p, nil
				}
			}
		}
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", x.name, x.pkg))
		}
	}
	if len(missing) > 0 {
		return tools{}, fmt.Errorf("%w: %s", ErrMissingTool, strings.Join(missing, ", "))
	}
	return t, nil
}

// assemble writes MBR + zeros + the partition to path atomically, hashing on the way, and
// checks that the image came out at exactly size bytes.
func assemble(path string, mbr []byte, partFile string, size int64) (images.Digest, error) {
	part, err := os.Open(partFile)
	if err != nil {
		return images.Digest{}, fmt.Errorf("labos: %w", err)
	}
	defer part.Close()
	tmp, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return images.Digest{}, fmt.Errorf("labos: %w", err)
	}
	defer tmp.Cleanup()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	head := make([]byte, partStart)
	copy(head, mbr)
	n, err := w.Write(head)
	if err == nil {
		var m int64
		m, err = io.Copy(w, part)
		n += int(m)
	}
	if err == nil && int64(n) != size {
		err = fmt.Errorf("image came out at %d bytes, want %d", n, size)
	}
	if err == nil {
		err = tmp.Commit()
	}
	if err != nil {
		return images.Digest{}, fmt.Errorf("labos: write %s: %w", path, err)
	}
	var d images.Digest
	h.Sum(d[:0])
	return d, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
