package images

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
)

func image(t *testing.T, size int, zeroBlocks ...int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	for _, z := range zeroBlocks {
		clear(b[z*BlockSize : min(size, (z+1)*BlockSize)])
	}
	return b
}

func build(t *testing.T, img []byte, chunk int) *Manifest {
	t.Helper()
	bld := NewBuilder()
	for p := img; len(p) > 0; {
		k := min(chunk, len(p))
		bld.Write(p[:k])
		p = p[k:]
	}
	m, err := bld.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuilderAndRoundTrip(t *testing.T) {
	img := image(t, 3*BlockSize+1000, 1)
	m := build(t, img, 77777) // odd chunk size: blocks straddle writes
	if m.Size != int64(len(img)) || Digest(sha256.Sum256(img)) != m.Digest || len(m.Blocks) != 4 {
		t.Fatalf("size %d blocks %d digest %s", m.Size, len(m.Blocks), m.Digest)
	}
	if !m.Blocks[1].Zero || m.Blocks[0].Zero || m.Blocks[3].SHA256 != sha256.Sum256(img[3*BlockSize:]) {
		t.Errorf("blocks: %+v", m.Blocks)
	}
	if n, by := m.NonZero(); n != 3 || by != int64(len(img))-BlockSize {
		t.Errorf("NonZero = %d, %d", n, by)
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Manifest
	if err := back.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	enc2, _ := back.MarshalBinary()
	if !bytes.Equal(enc, enc2) {
		t.Error("round trip changed the encoding")
	}
	h1, _ := m.Hash()
	if h1 != sha256.Sum256(enc) {
		t.Error("manifest hash is not the hash of the encoding")
	}
	m.Blocks[2].SHA256[0] ^= 1
	if h2, _ := m.Hash(); h2 == h1 {
		t.Error("a changed block hash kept the manifest hash")
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	m := build(t, image(t, 2*BlockSize, 0), BlockSize)
	good, _ := m.MarshalBinary()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"short":           good[:10],
		"magic":           mut(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":         mut(func(b []byte) []byte { b[11] = 2; return b }),
		"block size":      mut(func(b []byte) []byte { b[14] = 9; return b }),
		"trailing":        append(append([]byte(nil), good...), 0),
		"truncated":       good[:len(good)-1],
		"count":           mut(func(b []byte) []byte { b[63] = 3; return b }),
		"flags":           mut(func(b []byte) []byte { b[headerLen] = 2; return b }),
		"zero mislabeled": mut(func(b []byte) []byte { b[headerLen+blockRecLen] = 1; return b }),
	}
	for name, b := range cases {
		var out Manifest
		if err := out.UnmarshalBinary(b); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzManifest(f *testing.F) {
	m := &Manifest{Size: BlockSize + 1, Blocks: []Block{{SHA256: ZeroHash(BlockSize), Zero: true}, {SHA256: Hash{1}}}}
	enc, _ := m.MarshalBinary()
	f.Add(enc)
	f.Add([]byte("IMGMNFST"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Manifest
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		enc, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("accepted an encoding that is not canonical: %v", err)
		}
	})
}
