package blobstore

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imaged/imaged/images"
)

// benchSize is the image size of the import benchmarks: IMAGED_BENCH_MIB or 256 MiB.
func benchSize(b *testing.B) int64 {
	if s := os.Getenv("IMAGED_BENCH_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n << 20
	}
	return 256 << 20
}

// halfZeroFile writes a raw image whose every other 4 MiB is zeros.
func halfZeroFile(b *testing.B, size int64) string {
	p := filepath.Join(b.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	data := image(4<<20, 9)
	for off := int64(0); off < size; off += 8 << 20 {
		if _, err := f.WriteAt(data[:min(int64(len(data)), size-off)], off); err != nil {
			b.Fatal(err)
		}
	}
	f.Truncate(size)
	f.Close()
	return p
}

// BenchmarkImport: a raw file into the store, as `imaged image import` does, fsync included.
// IMAGED_BENCH_MIB=1024 go test -run X -bench Import -benchtime 3x ./images/blobstore
func BenchmarkImport(b *testing.B) {
	size := benchSize(b)
	p := halfZeroFile(b, size)
	b.Run("pipeline", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			s, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			f, _ := os.Open(p)
			if _, _, err := s.Import(b.Context(), f, nil); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	// The same work on one goroutine with images.Builder, for comparison.
	b.Run("builder", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, chunkSize)
		for b.Loop() {
			out, err := os.Create(filepath.Join(b.TempDir(), "blob"))
			if err != nil {
				b.Fatal(err)
			}
			f, _ := os.Open(p)
			bld := images.NewBuilder()
			var off int64
			for {
				n, err := io.ReadFull(f, buf)
				bld.Write(buf[:n])
				for o := 0; o < n; o += images.BlockSize {
					blk := buf[o:min(n, o+images.BlockSize)]
					if !images.IsZero(blk) {
						out.WriteAt(blk, off+int64(o))
					}
				}
				off += int64(n)
				if err != nil {
					break
				}
			}
			if _, err := bld.Manifest(); err != nil {
				b.Fatal(err)
			}
			out.Truncate(off)
			out.Sync()
			out.Close()
			f.Close()
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	size := benchSize(b)
	p := halfZeroFile(b, size)
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	f, _ := os.Open(p)
	d, _, err := s.Import(b.Context(), f, nil)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if r, err := s.Verify(b.Context(), d); err != nil || !r.OK() {
			b.Fatal(err)
		}
	}
}
