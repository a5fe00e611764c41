package convert

import (
	"bytes"
	"net/url"
	"path"
	"strings"
)

// Magic numbers, at offset 0 unless said otherwise.
var (
	magicGzip  = []byte{0x1f, 0x8b}                             // RFC 1952 §2.3.1 ID1 ID2
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}                 // RFC 8878 §3.1.1 Magic_Number 0xFD2FB528, little-endian
	magicXZ    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}         // xz file format §2.1.1.1 Header Magic Bytes
	magicQcow2 = []byte{'Q', 'F', 'I', 0xfb}                    // qcow2.txt: magic "QFI\xfb"
	magicVHDX  = []byte{'v', 'h', 'd', 'x', 'f', 'i', 'l', 'e'} // MS-VHDX 2.2.1 File Type Identifier
	// VHD spec, Hard Disk Footer: Cookie "conectix". A fixed disk has the footer only at the end
	// of the file; dynamic and differencing disks also keep a copy at offset 0.
	magicVHD = []byte{'c', 'o', 'n', 'e', 'c', 't', 'i', 'x'}
)

// Formats recognised only to be refused with a useful message: a raw disk never starts with
// these, and importing one as "raw" would store an image that boots nothing.
var refusedMagic = []struct {
	magic []byte
	what  string
}{
	{[]byte("BZh"), "bzip2 (use gzip, zstd or xz)"},
	{[]byte{0x04, 0x22, 0x4d, 0x18}, "lz4 (use gzip, zstd or xz)"},
	{[]byte("PK\x03\x04"), "a zip archive"},
	{[]byte{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c}, "a 7-zip archive"},
	{[]byte("KDMV"), "VMDK (convert it with qemu-img convert -O qcow2)"},
	{[]byte("<<< Oracle VM VirtualBox Disk Image >>>"), "VDI (convert it with qemu-img convert -O qcow2)"},
}

// refused names what head is when it is a format imaged refuses, or "".
func refused(head []byte) string {
	for _, r := range refusedMagic {
		if bytes.HasPrefix(head, r.magic) {
			return r.what
		}
	}
	return ""
}

// isZstdSkippable: RFC 8878 §3.1.2 "Magic_Number: 0x184D2A5?" (little-endian; pzstd starts its
// output with one).
func isZstdSkippable(head []byte) bool {
	return len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18
}

// detect names the format of a source from its first bytes (head) and, when the source is
// seekable, its last 512 bytes (tail; nil otherwise). Anything unrecognised is raw.
func detect(head, tail []byte) Format {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip
	case bytes.HasPrefix(head, magicZstd), isZstdSkippable(head):
		return Zstd
	case bytes.HasPrefix(head, magicXZ):
		return XZ
	case bytes.HasPrefix(head, magicQcow2):
		return Qcow2
	case bytes.HasPrefix(head, magicVHDX):
		return VHDX
	case bytes.HasPrefix(head, magicVHD), bytes.HasPrefix(tail, magicVHD):
		return VHD
	}
	return Raw
}

// wrapped names the format that the decompressed bytes of a compressed stream start with, or ""
// if they look raw: compression must wrap raw bytes, and a qcow2 (or a second layer of
// compression) inside gzip is refused rather than stored as a "raw" image that boots nothing.
func wrapped(head []byte) Format {
	if f := detect(head, nil); f != Raw {
		return f
	}
	return ""
}

// named is the format a source's name claims by its extension, or "" if it claims none. It is
// never trusted to pick a format; it catches the one case magic numbers cannot: a fixed VHD
// whose footer was cut off looks like a raw image.
func named(name string) Format {
	if u, err := url.Parse(name); err == nil && u.Scheme != "" {
		name = u.Path
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".qcow2", ".qcow":
		return Qcow2
	case ".vhd":
		return VHD
	case ".vhdx":
		return VHDX
	case ".gz":
		return Gzip
	case ".zst":
		return Zstd
	case ".xz":
		return XZ
	}
	return ""
}
