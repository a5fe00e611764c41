package lab

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MakeDiskImage writes a raw disk image of sizeMiB at path with a real partition table: GPT with
// one Linux partition from 1 MiB to the end, holding an ext4 file system with dataMiB of random
// files. The rest of the disk is zero, so about (sizeMiB-dataMiB)/sizeMiB of its blocks are
// zero blocks. It needs sfdisk (util-linux) and mke2fs (e2fsprogs); no loop device.
func MakeDiskImage(path string, sizeMiB, dataMiB int, seed string) error {
	if dataMiB >= sizeMiB-8 {
		return fmt.Errorf("lab: %d MiB of data does not fit a %d MiB image", dataMiB, sizeMiB)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		f.Close()
		return err
	}
	f.Close()
	layout := "label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"imaged-test\"\n"
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: sfdisk (apt-get install fdisk): %v: %s", err, out)
	}
	content, err := os.MkdirTemp("", "imaged-image-content")
	if err != nil {
		return err
	}
	defer os.RemoveAll(content)
	os.WriteFile(filepath.Join(content, "IMAGE"), []byte(seed+"\n"), 0o644)
	buf := make([]byte, 1<<20)
	for i := 0; i < dataMiB; i++ {
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(content, fmt.Sprintf("data%03d.bin", i)), buf, 0o644); err != nil {
			return err
		}
	}
	// The partition starts at 1 MiB and runs to the end less GPT's backup header (33 sectors).
	fsBlocks := ((sizeMiB-1)<<20 - 64<<10) / 4096
	out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "imaged-test",
		"-E", "offset=1048576,lazy_itable_init=0,nodiscard", "-d", content, path, fmt.Sprint(fsBlocks)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: mke2fs (apt-get install e2fsprogs): %v: %s", err, out)
	}
	return nil
}
