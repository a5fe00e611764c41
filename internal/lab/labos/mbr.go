package labos

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// The classic MBR (sector 0): boot code in bytes 0-439, the disk signature at 440, four 16-byte
// partition entries from 446, and the signature 55 AA at 510.
const (
	mbrCodeLen   = 440
	mbrDiskID    = 440
	mbrTable     = 446
	mbrSignature = 510
)

// partitionType is the MBR type byte of each FAT, with LBA addressing where it exists:
// 0x0C FAT32 (LBA), 0x0E FAT16 (LBA), 0x01 FAT12.
var partitionType = map[string]byte{"FAT12": 0x01, "FAT16": 0x0e, "FAT32": 0x0c}

// makeMBR returns sector 0: code (SYSLINUX's mbr.bin, which boots the active partition), the
// disk signature, and one active partition of count sectors from sector start.
func makeMBR(code []byte, diskID, start, count uint32, typ byte) ([]byte, error) {
	if len(code) == 0 || len(code) > mbrCodeLen {
		return nil, fmt.Errorf("labos: MBR boot code is %d bytes, want 1 to %d", len(code), mbrCodeLen)
	}
	if typ == 0 {
		return nil, fmt.Errorf("labos: no MBR partition type")
	}
	s := make([]byte, 512)
	copy(s, code)
	binary.LittleEndian.PutUint32(s[mbrDiskID:], diskID)
	e := s[mbrTable : mbrTable+16]
	e[0] = 0x80 // active: mbr.bin boots this one
	first, last := chs(start), chs(start+count-1)
	copy(e[1:4], first[:])
	e[4] = typ
	copy(e[5:8], last[:])
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], count)
	s[mbrSignature], s[mbrSignature+1] = 0x55, 0xaa
	return s, nil
}

// chs is the cylinder/head/sector form of an LBA in an MBR entry, with the 255-head,
// 63-sector geometry that everything assumes today; past cylinder 1023 it is the conventional
// "use LBA" value FE FF FF. (SYSLINUX's MBR reads by LBA through the BIOS's EDD extensions.)
func chs(lba uint32) [3]byte {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	if c > 1023 {
		return [3]byte{0xfe, 0xff, 0xff}
	}
	h := (lba / sectors) % heads
	sec := lba%sectors + 1
	return [3]byte{byte(h), byte(sec) | byte(c>>8)<<6, byte(c)}
}

// fatType reads a FAT boot sector's file system type string: "FAT12" or "FAT16" at offset 54,
// "FAT32" at 82 (the extended BPBs of FAT12/16 and FAT32 differ).
func fatType(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("labos: %w", err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := io.ReadFull(f, b); err != nil {
		return "", fmt.Errorf("labos: boot sector of %s: %w", path, err)
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return "", fmt.Errorf("labos: %s has no boot sector signature", path)
	}
	for _, off := range []int{54, 82} {
		if t := string(b[off : off+5]); partitionType[t] != 0 {
			return t, nil
		}
	}
	return "", fmt.Errorf("labos: %s is not a FAT file system mkfs.fat made (no FAT12/16/32 in its boot sector)", path)
}
