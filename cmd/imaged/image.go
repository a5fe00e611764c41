package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/images/convert"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/progressbar"
)

func cmdImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "image", "import", "list", "show", "verify", "delete", "promote", "rollback", "prune")
	if err != nil {
		return err
	}
	fs := newFlags("image "+sub, stderr)
	af := addAPIFlags(fs, "who is making the change (recorded in channel histories)")
	var s3Endpoint, s3Region *string
	var keep *int
	switch sub {
	case "import":
		s3Endpoint = fs.String("s3-endpoint", "", "S3-compatible endpoint for s3:// sources, e.g. http://minio:9000")
		s3Region = fs.String("s3-region", "", "region for s3:// sources")
	case "prune":
		keep = fs.Int("keep", 10, "versions to keep per image name (besides those a channel or a machine points at)")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	want := map[string]int{"import": 2, "list": 0, "show": 1, "verify": 1, "delete": 1, "promote": 2, "rollback": 1, "prune": 0}[sub]
	if fs.NArg() != want {
		return usageError{imageUsage[sub]}
	}
	a := fs.Args()
	var ref images.Ref // the image the arguments name: NAME@TAG, or also a digest where it may be one
	switch sub {
	case "import", "delete", "promote", "rollback":
		ref, err = parseRef(a[0])
	case "show", "verify":
		ref, err = parseImageRef(a[0])
	}
	if err != nil {
		return err
	}
	c, err := af.connect(stderr, sub == "list" || sub == "show" || sub == "verify")
	if err != nil {
		return err
	}
	defer c.close()
	// This host's blob store: imports write into it, verify reads it, and opening it removes what
	// imports killed outright left. With -server it is the config's, if it is this host's.
	cfg := c.cfg
	if cfg == nil && (sub == "import" || sub == "verify") {
		if cfg, err = config.Load(*af.config); err != nil {
			return fmt.Errorf("%s reads and writes the blob store on imaged's host (-config): %w", sub, err)
		}
	}
	var blobs *blobstore.Store
	if cfg != nil {
		if blobs, err = blobstore.Open(imagesDir(cfg)); err != nil {
			return err
		}
	}
	ic := imageCmd{api: c.Client, blobs: blobs, stdout: stdout, stderr: stderr}
	switch sub {
	case "import":
		return ic.importImage(ctx, ref, a[1], convert.Options{S3Endpoint: *s3Endpoint, S3Region: *s3Region})
	case "list":
		return ic.list(ctx)
	case "show":
		info, err := c.Image(ctx, ref)
		if err != nil {
			return err
		}
		return printJSON(stdout, info)
	case "verify":
		return ic.verify(ctx, ref)
	case "delete":
		rep, err := c.DeleteImage(ctx, ref)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s (%s)%s\n", rep.Image.Ref(), rep.Image.Digest, map[bool]string{true: ", blob removed", false: ", blob kept: another version has the same bytes"}[rep.BlobRemoved])
		return nil
	case "promote":
		ch, err := c.Promote(ctx, ref, a[1])
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s@%s: %s → %s (by %s)\n", ref.Name, a[1], dash(mv.From), mv.To, mv.By)
		return nil
	case "rollback":
		ch, err := c.Rollback(ctx, ref)
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s rolled back: %s → %s (by %s)\n", ref, mv.From, mv.To, mv.By)
		return nil
	default: // prune
		rep, err := c.Prune(ctx, *keep)
		if err != nil {
			return err
		}
		for _, img := range rep.Pruned {
			fmt.Fprintf(stdout, "pruned %s (%s)\n", img.Ref(), img.Digest)
		}
		refs := make([]string, 0, len(rep.Kept))
		for ref := range rep.Kept {
			refs = append(refs, ref)
		}
		sort.Strings(refs)
		for _, ref := range refs {
			fmt.Fprintf(stdout, "kept %s: in use by %s\n", ref, strings.Join(rep.Kept[ref], ", "))
		}
		fmt.Fprintf(stdout, "%d pruned\n", len(rep.Pruned))
		return nil
	}
}

var imageUsage = map[string]string{
	"import":   "usage: imaged image import [flags] NAME@VERSION SOURCE   (SOURCE: a file, http(s)://…, or s3://bucket/key)",
	"list":     "usage: imaged image list [flags]",
	"show":     "usage: imaged image show [flags] NAME@VERSION|NAME@CHANNEL|sha256:DIGEST",
	"verify":   "usage: imaged image verify [flags] NAME@VERSION|NAME@CHANNEL|sha256:DIGEST",
	"delete":   "usage: imaged image delete [flags] NAME@VERSION",
	"promote":  "usage: imaged image promote [flags] NAME@VERSION CHANNEL",
	"rollback": "usage: imaged image rollback [flags] NAME@CHANNEL",
	"prune":    "usage: imaged image prune [-keep N]",
}

// parseRef reads NAME@VERSION or NAME@CHANNEL from the command line.
func parseRef(s string) (images.Ref, error) {
	r, err := images.ParseRef(s)
	if err != nil {
		return images.Ref{}, usageError{err.Error()}
	}
	return r, nil
}

// parseImageRef reads what names an image on the command line: NAME@VERSION, NAME@CHANNEL or a
// digest.
func parseImageRef(s string) (images.Ref, error) {
	r, err := images.ParseRefOrDigest(s)
	if err != nil {
		return images.Ref{}, usageError{err.Error()}
	}
	return r, nil
}

// imageCmd is one `imaged image` command's API, this host's blob store and output.
type imageCmd struct {
	api            *api.Client
	blobs          *blobstore.Store // nil with -server unless import or verify
	stdout, stderr io.Writer
}

// importImage converts and stores source in one streaming pass into this host's blob store,
// then registers it through the API. The blob is committed only when the whole image has been
// read and hashed; the catalog entry only once the blob is committed. An error or an interrupt
// before that leaves neither.
func (ic imageCmd) importImage(ctx context.Context, ref images.Ref, src string, opt convert.Options) error {
	c, blobs, stdout := ic.api, ic.blobs, ic.stdout
	if old, err := c.Image(ctx, ref); err == nil && old.Image.Name == ref.Name && old.Image.Version == ref.Tag {
		return fmt.Errorf("%s already exists (%s); versions are immutable: import under a new version", ref, old.Image.Digest)
	}
	// The catalog keeps the source without its credentials (images.Image.Source); messages never
	// show them either.
	shown, removed := images.RedactSource(src)
	start := time.Now()
	s, err := convert.Open(ctx, src, opt)
	if err != nil {
		return err
	}
	defer s.Close()
	_, total := s.Progress()
	bar := progressbar.New(ic.stderr, total, progressbar.Options{Desc: "import " + ref.String()})
	d, m, err := blobs.Import(ctx, s.Raw(), func(int64) { done, _ := s.Progress(); bar.Set(done) })
	bar.Finish(err)
	if err != nil {
		return fmt.Errorf("import %s from %s: %w", ref, shown, err)
	}
	mh, err := m.Hash()
	if err != nil {
		return err
	}
	got, err := c.Register(ctx, api.RegisterRequest{Name: ref.Name, Version: ref.Tag, Digest: d.String(), Source: src, Format: string(s.Format)})
	if err != nil {
		// Nothing registered: take the blob back out too, unless another version has the same bytes.
		if _, rerr := c.Image(ctx, images.Ref{Digest: d}); rerr != nil {
			if derr := blobs.Delete(d); derr != nil {
				err = errors.Join(err, fmt.Errorf("and the unregistered blob could not be removed: %w", derr))
			}
		}
		return err
	}
	if got.Digest != d || got.ManifestHash != mh {
		return fmt.Errorf("imaged registered %s as %s with manifest %s, but this import made %s with %s", ref, got.Digest, got.ManifestHash, d, mh)
	}
	secs := time.Since(start).Seconds()
	format := string(s.Format)
	if s.Detail != "" {
		format += ", " + s.Detail
	}
	blocks, _ := m.NonZero()
	fmt.Fprintf(stdout, "imported %s: %s\n  %d bytes (%s), %d of %d blocks hold data, manifest %s\n  %.1f s, %.0f MB/s\n",
		ref, d, m.Size, format, blocks, len(m.Blocks), mh, secs, float64(m.Size)/secs/1e6)
	if removed != nil {
		fmt.Fprintf(stdout, "  source recorded as %s (without %s)\n", shown, strings.Join(removed, ", "))
	}
	return nil
}

func (ic imageCmd) list(ctx context.Context) error {
	cat, err := ic.api.Images(ctx)
	if err != nil {
		return err
	}
	channels := map[images.Ref][]string{}
	for _, ch := range cat.Channels {
		k := images.Ref{Name: ch.Name, Tag: ch.Version}
		channels[k] = append(channels[k], ch.Channel)
	}
	printTable(ic.stdout, "IMAGE\tDIGEST\tSIZE\tDATA\tCHANNELS\tIMPORTED", "(no images)", cat.Images, func(img images.Image) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", img.Ref(), shortDigest(img.Digest.String()), mib(img.Size), mib(img.DataBytes),
			dash(strings.Join(channels[img.Ref()], ",")), img.Imported.Local().Format(time.DateTime))
	})
	return nil
}

// verifyImage re-hashes the blob of the image ref names, in this host's blob store.
func (ic imageCmd) verify(ctx context.Context, ref images.Ref) error {
	info, err := ic.api.Image(ctx, ref)
	if err != nil {
		return err
	}
	img := info.Image
	start := time.Now()
	r, err := ic.blobs.Verify(ctx, img.Digest)
	if err != nil {
		return err
	}
	if !r.OK() {
		var bad []string
		for _, b := range r.Corrupt {
			bad = append(bad, fmt.Sprintf("%d (bytes %d-%d)", b, int64(b)*images.BlockSize, min(int64(b+1)*images.BlockSize, r.WantSize)-1))
		}
		return fmt.Errorf("%s (%s) is CORRUPT: %d of %d blocks do not match the manifest: %s; blob size %d, manifest %d, digest ok %v",
			img.Ref(), img.Digest, len(r.Corrupt), r.Blocks, strings.Join(bad, ", "), r.Size, r.WantSize, r.DigestOK)
	}
	fmt.Fprintf(ic.stdout, "%s (%s): ok, %d blocks and the digest verified in %.1f s\n", img.Ref(), img.Digest, r.Blocks, time.Since(start).Seconds())
	return nil
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
