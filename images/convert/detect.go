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

// detect names the format of a source from its first bytes (head) and, when the source is
// seekable, its last 512 bytes (tail; nil otherwise). Anything unrecognised is raw.
func detect(head, tail []byte) Format {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip
	case bytes.HasPrefix(head, magicZstd):
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
