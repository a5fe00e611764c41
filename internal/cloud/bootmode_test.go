package cloud

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// disk makes a 1 MiB image: BIOS boot code and the MBR signature, and/or a GPT whose partition
// array holds a partition of the given type GUID (as stored) at entry 5.
func disk(bootCode bool, gptType []byte, mbrType byte) []byte {
	d := make([]byte, 1<<20)
	if bootCode {
		copy(d, []byte{0xeb, 0x63, 0x90}) // a jump, as boot code begins
	}
	if bootCode || gptType != nil || mbrType != 0 {
		d[510], d[511] = 0x55, 0xaa
	}
	if mbrType != 0 {
		d[446+4] = mbrType
	}
	if gptType != nil {
		d[446+4] = 0xee // protective MBR
		h := d[512:]
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint64(h[72:], 2)   // entries at LBA 2
		binary.LittleEndian.PutUint32(h[80:], 128) // 128 entries
		binary.LittleEndian.PutUint32(h[84:], 128) // of 128 bytes
		copy(d[2*512+5*128:], gptType)
	}
	return d
}

func TestDetectBootMode(t *testing.T) {
	linuxFS := []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	cases := []struct {
		name string
		img  []byte
		want string
	}{
		{"MBR with boot code (SYSLINUX, GRUB on BIOS)", disk(true, nil, 0x83), BootLegacyBIOS},
		{"GPT with an ESP", disk(false, espType, 0), BootUEFI},
		{"MBR partition of type 0xEF", disk(false, nil, 0xef), BootUEFI},
		{"hybrid: boot code in the protective MBR and an ESP", disk(true, espType, 0), BootUEFIPreferred},
		{"GPT with boot code but only a Linux partition", disk(true, linuxFS, 0), BootLegacyBIOS},
	}
	for _, c := range cases {
		got, err := DetectBootMode(bytes.NewReader(c.img), int64(len(c.img)))
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for name, img := range map[string][]byte{"blank": make([]byte, 1<<20), "GPT without an ESP or boot code": disk(false, linuxFS, 0)} {
		if got, err := DetectBootMode(bytes.NewReader(img), int64(len(img))); err == nil || !strings.Contains(err.Error(), "no firmware can boot it") {
			t.Errorf("%s: %q, %v; want refused", name, got, err)
		}
	}
	bad := disk(false, espType, 0)
	binary.LittleEndian.PutUint32(bad[512+80:], 1<<20) // a million entries
	if _, err := DetectBootMode(bytes.NewReader(bad), int64(len(bad))); err == nil || !strings.Contains(err.Error(), "impossible partition array") {
		t.Errorf("a lying GPT header: %v", err)
	}
}
