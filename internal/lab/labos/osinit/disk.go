package osinit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agent"
)

// ErrShortDisk is returned (wrapped) by DiskDigest when the disk ends before the image would.
var ErrShortDisk = errors.New("osinit: the disk is smaller than the image")

// DiskDigest is the SHA-256 of the first n bytes of the disk (or file) at path: the image's
// digest if and only if those bytes are exactly the image. It only reads.
func DiskDigest(ctx context.Context, path string, n int64) (images.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return images.Digest{}, fmt.Errorf("osinit: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return images.Digest{}, fmt.Errorf("osinit: hashing %s: %w", path, err)
		}
		chunk := buf[:min(int64(len(buf)), n-done)]
		k, err := io.ReadFull(f, chunk)
		h.Write(chunk[:k])
		done += int64(k)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return images.Digest{}, fmt.Errorf("%w: %s ends after %d bytes, the image is %d", ErrShortDisk, path, done, n)
		}
		if err != nil {
			return images.Digest{}, fmt.Errorf("osinit: read %s at %d: %w", path, done, err)
		}
	}
	var d images.Digest
	h.Sum(d[:0])
	return d, nil
}

// diskKinds are the names of whole disks that the os mode may boot from: virtio-blk, SATA/SCSI
// (sd_mod), NVMe namespaces, Xen.
var diskKinds = []string{"vd", "sd", "nvme", "xvd"}

// bootDisk picks the disk to hash: cfg.Disk when set (waiting for its node), or else the only
// virtio, SATA/SCSI or NVMe disk that is not removable, waiting up to cfg.DiskTimeout for one to
// appear (drivers register disks a little after their module loads). Two candidates are an
// error: the os mode never guesses which disk holds its image.
func bootDisk(ctx context.Context, cfg *Config) (agent.Disk, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DiskTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var (
			cands []agent.Disk
			disks []agent.Disk
			err   error
		)
		if cfg.Disk != "" {
			if _, err = os.Stat(cfg.Disk); err == nil {
				return agent.Disk{Name: filepath.Base(cfg.Disk), Path: cfg.Disk}, nil
			}
		} else {
			disks, err = agent.ListDisks(cfg.SysBlock)
			for _, d := range disks {
				if isBootDiskKind(d) {
					d.Path = filepath.Join(cfg.DevDir, d.Name)
					cands = append(cands, d)
				}
			}
		}
		switch {
		case len(cands) == 1:
			return cands[0], nil
		case len(cands) > 1:
			return agent.Disk{}, fmt.Errorf("osinit: %d disks could hold the image (%s): name one with imaged.disk=", len(cands), describe(cands))
		}
		select {
		case <-ctx.Done():
			if cfg.Disk != "" {
				return agent.Disk{}, fmt.Errorf("osinit: imaged.disk=%s: not there after %v: %w", cfg.Disk, cfg.DiskTimeout, err)
			}
			if err != nil {
				return agent.Disk{}, fmt.Errorf("osinit: no virtio, SATA or NVMe disk after %v: %w", cfg.DiskTimeout, err)
			}
			return agent.Disk{}, fmt.Errorf("osinit: no virtio, SATA or NVMe disk after %v (disks: %s): is its driver in the initramfs?", cfg.DiskTimeout, describe(disks))
		case <-tick.C:
		}
	}
}

func isBootDiskKind(d agent.Disk) bool {
	if d.Removable {
		return false
	}
	for _, k := range diskKinds {
		if strings.HasPrefix(d.Name, k) {
			return true
		}
	}
	return false
}

func describe(ds []agent.Disk) string {
	if len(ds) == 0 {
		return "none"
	}
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%s %d bytes", d.Name, d.Size))
	}
	return strings.Join(s, ", ")
}
