package convert

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkRaw measures the readers alone: Open and Raw of every file in IMAGED_BENCH_DIR,
// into SHA-256 (what an import does with the bytes) and into io.Discard. Make the files with
// qemu-img convert -O qcow2|vpc|vhdx from one raw image, and compare with the time of
// qemu-img convert -O raw of each:
//
//	IMAGED_BENCH_DIR=/tmp/bench go test -run X -bench Raw -benchtime 3x ./images/convert
func BenchmarkRaw(b *testing.B) {
	dir := os.Getenv("IMAGED_BENCH_DIR")
	if dir == "" {
		b.Skip("IMAGED_BENCH_DIR is not set")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		for _, sink := range []string{"sha256", "discard"} {
			b.Run(e.Name()+"/"+sink, func(b *testing.B) {
				for b.Loop() {
					src, err := Open(b.Context(), p, Options{})
					if err != nil {
						b.Fatal(err)
					}
					var w io.Writer = io.Discard
					if sink == "sha256" {
						w = sha256.New()
					}
					n, err := io.Copy(w, src.Raw())
					src.Close()
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(n)
				}
			})
		}
	}
}
