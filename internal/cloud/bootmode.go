package cloud

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// EC2 boot modes (RegisterImage BootMode).
const (
	BootLegacyBIOS    = "legacy-bios"
	BootUEFI          = "uefi"
	BootUEFIPreferred = "uefi-preferred" // boots UEFI where the instance type can, else legacy BIOS
)

// The EFI System Partition's type: C12A7328-F81F-11D2-BA4B-00A0C93EC93B, as GPT stores it (the
// first three fields little-endian).
var espType = []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}

// DetectBootMode tells from a raw disk image how firmware can boot it: BIOS boot code in the MBR
// (with its 0x55AA signature), an EFI System Partition (in the GPT, or an MBR partition of type
// 0xEF), or both (uefi-preferred). An image with neither cannot boot, and is an error: registering
// it would make an AMI whose instances never start.
func DetectBootMode(disk io.ReaderAt, size int64) (string, error) {
	const sector = 512
	mbr := make([]byte, sector)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return "", fmt.Errorf("cloud: read the MBR: %w", err)
	}
	signed := mbr[510] == 0x55 && mbr[511] == 0xaa
	bios := signed && !allZero(mbr[:440])
	esp := false
	if signed {
		for i := 0; i < 4; i++ {
			if mbr[446+16*i+4] == 0xef {
				esp = true
			}
		}
	}
	if !esp {
		var err error
		if esp, err = gptHasESP(disk, size); err != nil {
			return "", err
		}
	}
	switch {
	case bios && esp:
		return BootUEFIPreferred, nil
	case esp:
		return BootUEFI, nil
	case bios:
		return BootLegacyBIOS, nil
	}
	return "", errors.New("cloud: the image has neither BIOS boot code in its MBR nor an EFI System Partition, so no firmware can boot it; give the boot mode explicitly if you know better")
}

// gptHasESP reads the primary GPT (512-byte sectors) and looks for an EFI System Partition.
func gptHasESP(disk io.ReaderAt, size int64) (bool, error) {
	hdr := make([]byte, 92)
	if _, err := disk.ReadAt(hdr, 512); err != nil {
		return false, nil // too small for a GPT
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return false, nil
	}
	lba := int64(binary.LittleEndian.Uint64(hdr[72:]))
	n := int64(binary.LittleEndian.Uint32(hdr[80:]))
	esize := int64(binary.LittleEndian.Uint32(hdr[84:]))
	if esize < 128 || esize > 4096 || n > 1024 || lba < 2 || lba*512+n*esize > size {
		return false, fmt.Errorf("cloud: the GPT header names an impossible partition array (%d entries of %d bytes at LBA %d)", n, esize, lba)
	}
	entries := make([]byte, n*esize)
	if _, err := disk.ReadAt(entries, lba*512); err != nil {
		return false, fmt.Errorf("cloud: read the GPT partition entries: %w", err)
	}
	for i := int64(0); i < n; i++ {
		if bytes.Equal(entries[i*esize:i*esize+16], espType) {
			return true, nil
		}
	}
	return false, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
