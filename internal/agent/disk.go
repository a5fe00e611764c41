package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Disk is a whole block device as sysfs shows it.
type Disk struct {
	Name      string // vda, nvme0n1, sda
	Path      string // /dev/<name>
	Size      int64  // bytes
	Serial    string
	DevPath   string // the device's sysfs path, e.g. /sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda
	Removable bool
}

// ErrNoDisk and ErrAmbiguousDisk are returned by PickDisk.
var (
	ErrNoDisk        = errors.New("no disk fits the plan")
	ErrAmbiguousDisk = errors.New("more than one disk fits the plan")
)

// Device kinds that are never a blade's system disk.
var notDisks = []string{"loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"}

// ListDisks reads the whole block devices under sysBlock (/sys/block).
func ListDisks(sysBlock string) ([]Disk, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("agent: list disks: %w", err)
	}
	var out []Disk
next:
	for _, e := range ents {
		name := e.Name()
		for _, p := range notDisks {
			if strings.HasPrefix(name, p) {
				continue next
			}
		}
		dir := filepath.Join(sysBlock, name)
		sectors, err := readInt(filepath.Join(dir, "size"))
		if err != nil {
			continue
		}
		d := Disk{Name: name, Path: "/dev/" + name, Size: sectors * 512} // sysfs counts 512-byte sectors whatever the device's
		d.Removable = readString(filepath.Join(dir, "removable")) == "1"
		// virtio-blk has block/<dev>/serial; NVMe and SCSI have device/serial (or a wwid).
		for _, f := range []string{"serial", "device/serial", "device/wwid"} {
			if s := readString(filepath.Join(dir, f)); s != "" {
				d.Serial = s
				break
			}
		}
		if p, err := filepath.EvalSymlinks(dir); err == nil {
			d.DevPath = p
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PickDisk chooses the disk to write an image of size bytes onto: the one with the plan's serial,
// or whose sysfs path holds the plan's by-path (udev's by-path name, e.g. pci-0000:00:04.0, is
// matched by its PCI address since there is no udev in the initramfs), or else the only
// non-removable disk at least as large as the image. More than one candidate is an error: the
// agent never guesses which disk to wipe.
func PickDisk(disks []Disk, serial, byPath string, size int64) (Disk, error) {
	var fits []Disk
	for _, d := range disks {
		switch {
		case serial != "" && d.Serial != serial:
		case byPath != "" && !strings.Contains(d.DevPath, "/"+strings.TrimPrefix(strings.TrimPrefix(byPath, "pci-"), "/dev/disk/by-path/pci-")+"/"):
		case serial == "" && byPath == "" && d.Removable:
		case d.Size < size:
		default:
			fits = append(fits, d)
		}
	}
	describe := func(ds []Disk) string {
		var s []string
		for _, d := range ds {
			s = append(s, fmt.Sprintf("%s (%d bytes, serial %q, removable %v)", d.Path, d.Size, d.Serial, d.Removable))
		}
		if len(s) == 0 {
			return "no disks at all"
		}
		return strings.Join(s, "; ")
	}
	switch len(fits) {
	case 1:
		return fits[0], nil
	case 0:
		return Disk{}, fmt.Errorf("agent: %w (serial %q, by-path %q, image %d bytes); disks: %s", ErrNoDisk, serial, byPath, size, describe(disks))
	default:
		return Disk{}, fmt.Errorf("agent: %w: %s; name one by serial or by-path in the plan", ErrAmbiguousDisk, describe(fits))
	}
}

func readString(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(p string) (int64, error) {
	return strconv.ParseInt(readString(p), 10, 64)
}
