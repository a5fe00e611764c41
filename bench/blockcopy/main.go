// Command blockcopy-bench measures internal/blockcopy against bmaptool, curl and nginx, for
// bench/blockcopy/run.sh. Subcommands:
//
//	gen   -out DIR [-size BYTES] [-seed N]      a sparse image, half its blocks zero, and its manifest
//	copy  -url U -etag E -manifest M -out F ...  one agent: blockcopy.Copy onto F, Result as JSON
//	                                             (an https URL with -pin, the agent's pinned client)
//	bench -dir DIR                               everything above side by side, one table
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/blockcopy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blockcopy-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: blockcopy-bench gen|copy|bench [flags]")
	}
	fs := flag.NewFlagSet("blockcopy-bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "gen":
		out := fs.String("out", "", "directory for img and img.manifest")
		size := fs.Int64("size", 2<<30, "image size in bytes")
		seed := fs.Uint64("seed", 1, "random seed")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		m, err := gen(*out, *size, *seed)
		if err != nil {
			return err
		}
		nz, nzb := m.NonZero()
		fmt.Fprintf(stdout, "image %s: %d bytes, %d blocks, %d non-zero (%d bytes)\n", m.Digest, m.Size, len(m.Blocks), nz, nzb)
		return nil
	case "copy":
		return copyCmd(ctx, fs, args[1:], stdout)
	case "bench":
		return bench(ctx, fs, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown subcommand %q", args[0])
}

// gen writes DIR/img, a sparse image of interleaved runs of random and zero blocks (1 to 64
// blocks each, about half zero, block 0 data as a boot sector is), and DIR/img.manifest.
func gen(dir string, size int64, seed uint64) (*images.Manifest, error) {
	f, err := os.Create(filepath.Join(dir, "img"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	runs := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var key [32]byte
	key[0] = byte(seed)
	data := rand.NewChaCha8(key)
	b := images.NewBuilder()
	buf := make([]byte, 64*images.BlockSize)
	zeros := make([]byte, len(buf))
	zero := false
	for off := int64(0); off < size; zero = !zero {
		n := min(int64(1+runs.IntN(64))*images.BlockSize, size-off)
		if zero {
			b.Write(zeros[:n])
		} else {
			data.Read(buf[:n])
			b.Write(buf[:n])
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return nil, err
			}
		}
		off += n
	}
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	m, err := b.Manifest()
	if err != nil {
		return nil, err
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return m, os.WriteFile(filepath.Join(dir, "img.manifest"), enc, 0o644)
}

func readManifest(path string) (*images.Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := new(images.Manifest)
	return m, m.UnmarshalBinary(b)
}

// copyResult is what `copy` prints.
type copyResult struct {
	blockcopy.Result
	TLS   string `json:",omitempty"` // over https: the version and cipher suite negotiated
	Error string `json:",omitempty"`
}

func copyCmd(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	rawURL := fs.String("url", "", "blob URL, or file:PATH to read the image from a local file (the network taken out)")
	pinHex := fs.String("pin", "", "an https URL's certificate SHA-256 (imaged.tls_sha256): the agent's pinned client")
	etag := fs.String("etag", "", "blob's strong ETag")
	mpath := fs.String("manifest", "", "manifest file")
	out := fs.String("out", "", "target: a file (created), a block device, or null (writes dropped: the disk taken out)")
	workers := fs.Int("workers", 0, "Options.Workers (0: default)")
	hashers := fs.Int("hashers", 0, "Options.Hashers (0: default)")
	direct := fs.String("direct", "auto", "auto, on or off")
	zeroed := fs.Bool("zeroed", false, "Options.TargetZeroed")
	readback := fs.String("readback", "none", "none, sample or full")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := readManifest(*mpath)
	if err != nil {
		return err
	}
	u, err := url.Parse(*rawURL)
	if err != nil {
		return err
	}
	opt := blockcopy.Options{Workers: *workers, Hashers: *hashers, TargetZeroed: *zeroed}
	switch *direct {
	case "on":
		opt.Direct = blockcopy.DirectOn
	case "off":
		opt.Direct = blockcopy.DirectOff
	}
	switch *readback {
	case "sample":
		opt.ReadBack = blockcopy.ReadBackSample
	case "full":
		opt.ReadBack = blockcopy.ReadBackFull
	}
	var tgt blockcopy.Target
	if *out == "null" {
		tgt = nullTarget{}
	} else {
		flags := os.O_RDWR | os.O_CREATE | os.O_TRUNC
		if fi, err := os.Stat(*out); err == nil && fi.Mode()&os.ModeDevice != 0 {
			flags = os.O_RDWR
		}
		f, err := os.OpenFile(*out, flags, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		tgt = f
	}
	// The agent's own client (agent.Config.BlobClient): blockcopy's, plus over https the pinned
	// certificate check and nothing else, exactly as on a blade.
	var pin []byte
	if *pinHex != "" {
		if pin, err = agent.ParsePin(*pinHex); err != nil {
			return fmt.Errorf("-pin: %w", err)
		}
	}
	if (u.Scheme == "https") != (pin != nil) {
		return errors.New("-pin goes with an https -url, and only with one (as imaged.tls_sha256 with imaged.server)")
	}
	client := (&agent.Config{Server: u, TLSPin: pin}).BlobClient()
	var src blockcopy.Source = &blockcopy.HTTPSource{URL: u, ETag: *etag, Client: client}
	if u.Scheme == "file" {
		img, err := os.Open(u.Opaque + u.Path)
		if err != nil {
			return err
		}
		defer img.Close()
		src = fileSource{img}
	}
	res, err := blockcopy.Copy(ctx, tgt, src, m, opt)
	r := copyResult{Result: res}
	if err != nil {
		r.Error = err.Error()
	} else if pin != nil {
		r.TLS = tlsState(ctx, client, u)
	}
	if jerr := json.NewEncoder(stdout).Encode(r); jerr != nil {
		return jerr
	}
	return err
}

// tlsState asks one byte more of u, after the copy (on a connection it left open), and says
// what the handshake agreed: "TLS 1.3 TLS_AES_128_GCM_SHA256".
func tlsState(ctx context.Context, client *http.Client, u *url.URL) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.TLS == nil {
		return "no TLS"
	}
	return tls.VersionName(resp.TLS.Version) + " " + tls.CipherSuiteName(resp.TLS.CipherSuite)
}

// fileSource reads the image from a local file: the single-stream rate without the network.
type fileSource struct{ f *os.File }

func (s fileSource) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.f, off, n)), nil
}

// nullTarget drops writes and reads zeros: the hash-limited rate without the disk.
type nullTarget struct{}

func (nullTarget) ReadAt(p []byte, off int64) (int, error)  { clear(p); return len(p), nil }
func (nullTarget) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (nullTarget) Sync() error                              { return nil }
