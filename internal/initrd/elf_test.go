package initrd

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"
)

// fakeELF writes a minimal little-endian ELF64 file that debug/elf (and the kernel's module
// loader's metadata reading, for what the builder needs) accepts: the given sections plus
// .shstrtab, and an optional PT_INTERP program header.
type fakeELF struct {
	typ      elf.Type
	machine  elf.Machine
	sections []fakeSection
	interp   string // non-empty: add a PT_INTERP program header
}

type fakeSection struct {
	name string
	data []byte
}

func (f fakeELF) bytes(t testing.TB) []byte {
	t.Helper()
	var (
		body     bytes.Buffer // everything after the ELF header
		shstrtab = []byte{0}
		shdrs    = []elf.Section64{{}} // index 0 is the null section
		phdrs    []elf.Prog64
	)
	const ehsize, phentsize, shentsize = 64, 56, 64
	nph := 0
	if f.interp != "" {
		nph = 1
	}
	off := func() uint64 { return uint64(ehsize + nph*phentsize + body.Len()) }
	if f.interp != "" {
		o := off()
		body.WriteString(f.interp + "\x00")
		phdrs = append(phdrs, elf.Prog64{Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Off: o,
			Filesz: uint64(len(f.interp) + 1), Memsz: uint64(len(f.interp) + 1), Align: 1})
	}
	for _, s := range append(f.sections, fakeSection{name: ".shstrtab"}) {
		nameOff := uint32(len(shstrtab))
		shstrtab = append(shstrtab, s.name+"\x00"...)
		data, typ := s.data, elf.SHT_PROGBITS
		if s.name == ".shstrtab" {
			data, typ = shstrtab, elf.SHT_STRTAB
		}
		o := off()
		body.Write(data)
		shdrs = append(shdrs, elf.Section64{Name: nameOff, Type: uint32(typ), Off: o, Size: uint64(len(data)), Addralign: 1})
	}
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	hdr := elf.Header64{
		Type: uint16(f.typ), Machine: uint16(f.machine), Version: uint32(elf.EV_CURRENT),
		Shoff: off(), Ehsize: ehsize, Shentsize: shentsize, Shnum: uint16(len(shdrs)), Shstrndx: uint16(len(shdrs) - 1),
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if nph > 0 {
		hdr.Phoff, hdr.Phentsize, hdr.Phnum = ehsize, phentsize, uint16(nph)
	}
	var out bytes.Buffer
	for _, v := range []any{hdr, phdrs} {
		if err := binary.Write(&out, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	out.Write(body.Bytes())
	if err := binary.Write(&out, binary.LittleEndian, shdrs); err != nil {
		t.Fatal(err)
	}
	// Prove the helper itself: debug/elf must read it back.
	if _, err := elf.NewFile(bytes.NewReader(out.Bytes())); err != nil {
		t.Fatalf("fakeELF: debug/elf rejects it: %v", err)
	}
	return out.Bytes()
}

// fakeModule is a kernel module: ET_REL with a .modinfo section and some text.
func fakeModule(t testing.TB, name, vermagic string, depends ...string) []byte {
	var mi bytes.Buffer
	mi.WriteString("license=GPL\x00")
	mi.WriteString("depends=" + join(depends) + "\x00")
	mi.WriteString("name=" + name + "\x00")
	mi.WriteString("vermagic=" + vermagic + " SMP preempt mod_unload modversions \x00")
	return fakeELF{typ: elf.ET_REL, machine: elf.EM_X86_64, sections: []fakeSection{
		{name: ".text", data: bytes.Repeat([]byte(name), 300)},
		{name: ".modinfo", data: mi.Bytes()},
	}}.bytes(t)
}

// fakeBinary is a static executable (no PT_INTERP) unless interp is set.
func fakeBinary(t testing.TB, machine elf.Machine, interp string) []byte {
	return fakeELF{typ: elf.ET_EXEC, machine: machine, interp: interp, sections: []fakeSection{
		{name: ".text", data: bytes.Repeat([]byte("imaged agent code "), 1000)},
	}}.bytes(t)
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

func TestFakeModuleModinfo(t *testing.T) {
	mi, err := parseModinfo(fakeModule(t, "virtio_net", "6.1.0-test", "virtio_ring", "net-failover"))
	if err != nil {
		t.Fatal(err)
	}
	if mi.name != "virtio_net" || mi.vermagic != "6.1.0-test" || join(mi.depends) != "virtio_ring,net_failover" || mi.machine != elf.EM_X86_64 {
		t.Errorf("got %+v", mi)
	}
}
