package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/images/convert"
	"github.com/imaged/imaged/images/progress"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/store"
)

// imagesDir is where the blob store lives under the state directory.
func imagesDir(cfg *config.File) string { return filepath.Join(cfg.StateDir, "images") }

// catalog is the state file and the blob store, opened for a command that changes them.
type catalog struct {
	st    *store.Store
	blobs *blobstore.Store
}

func openCatalog(cfg *config.File, readOnly bool) (*catalog, error) {
	st, err := store.Open(filepath.Join(cfg.StateDir, "imaged.db"), store.Options{ReadOnly: readOnly, Timeout: 500 * time.Millisecond})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w: stop imaged (systemctl stop imaged) to change the catalog from the command line", err)
	}
	if err != nil {
		return nil, err
	}
	if !readOnly {
		// The config is the inventory's source of truth; bring the stored one up to date so that
		// a machine added to the config can be assigned before the daemon has run.
		if err := st.SyncMachines(machinesFromConfig(cfg)); err != nil {
			st.Close()
			return nil, err
		}
	}
	blobs, err := blobstore.Open(imagesDir(cfg))
	if err != nil {
		st.Close()
		return nil, err
	}
	return &catalog{st: st, blobs: blobs}, nil
}

func (c *catalog) close() { c.st.Close() }

// operator names who made a change, for channel histories.
func operator() string {
	for _, v := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "unknown"
}

func cmdImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "image", "import", "list", "show", "verify", "delete", "promote", "rollback", "prune")
	if err != nil {
		return err
	}
	fs := newFlags("image "+sub, stderr)
	path := configFlag(fs)
	by := fs.String("by", operator(), "who is making the change (recorded in channel histories)")
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
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	c, err := openCatalog(cfg, sub == "list" || sub == "show" || sub == "verify")
	if err != nil {
		return err
	}
	defer c.close()
	a := fs.Args()
	switch sub {
	case "import":
		return c.importImage(ctx, a[0], a[1], *by, convert.Options{S3Endpoint: *s3Endpoint, S3Region: *s3Region}, stdout, stderr)
	case "list":
		return c.list(stdout)
	case "show":
		return c.show(a[0], stdout)
	case "verify":
		return c.verify(ctx, a[0], stdout)
	case "delete":
		name, version, err := splitRef(a[0])
		if err != nil {
			return err
		}
		img, free, err := c.st.DeleteImage(name, version)
		if err != nil {
			return err
		}
		if free {
			d, _ := images.ParseDigest(img.Digest)
			if err := c.blobs.Delete(d); err != nil {
				return fmt.Errorf("%s removed from the catalog, but its blob was not: %w", img.Ref(), err)
			}
		}
		fmt.Fprintf(stdout, "deleted %s (%s)%s\n", img.Ref(), img.Digest, map[bool]string{true: ", blob removed", false: ", blob kept: another version has the same bytes"}[free])
		return nil
	case "promote":
		name, version, err := splitRef(a[0])
		if err != nil {
			return err
		}
		ch, err := c.st.Promote(name, version, a[1], *by)
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s@%s: %s → %s (by %s)\n", name, a[1], dash(mv.From), mv.To, *by)
		return nil
	case "rollback":
		name, channel, err := splitRef(a[0])
		if err != nil {
			return err
		}
		ch, err := c.st.Rollback(name, channel, *by)
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s@%s rolled back: %s → %s (by %s)\n", name, channel, mv.From, mv.To, *by)
		return nil
	default: // prune
		removed, kept, err := c.st.Prune(*keep)
		if err != nil {
			return err
		}
		for _, p := range removed {
			if p.BlobFree {
				d, _ := images.ParseDigest(p.Image.Digest)
				if err := c.blobs.Delete(d); err != nil {
					return fmt.Errorf("%s removed from the catalog, but its blob was not: %w", p.Image.Ref(), err)
				}
			}
			fmt.Fprintf(stdout, "pruned %s (%s)\n", p.Image.Ref(), p.Image.Digest)
		}
		for ref, why := range kept {
			fmt.Fprintf(stdout, "kept %s: in use by %s\n", ref, strings.Join(why, ", "))
		}
		fmt.Fprintf(stdout, "%d pruned\n", len(removed))
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

var refPart = func(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+", r)) {
			return false
		}
	}
	return true
}

func splitRef(ref string) (string, string, error) {
	name, tag, ok := strings.Cut(ref, "@")
	if !ok || !refPart(name) || !refPart(tag) {
		return "", "", usageError{fmt.Sprintf("%q is not NAME@VERSION (letters, digits, . _ - +)", ref)}
	}
	return name, tag, nil
}

// importImage converts and stores source in one streaming pass, then registers it. The blob is
// committed only when the whole image has been read and hashed; the catalog entry only once the
// blob is committed. An error or an interrupt before that leaves neither.
func (c *catalog) importImage(ctx context.Context, ref, src, by string, opt convert.Options, stdout, stderr io.Writer) error {
	name, version, err := splitRef(ref)
	if err != nil {
		return err
	}
	if old, err := c.st.ResolveImage(ref); err == nil && old.Name == name && old.Version == version {
		return fmt.Errorf("%s already exists (%s); versions are immutable: import under a new version", ref, old.Digest)
	}
	start := time.Now()
	s, err := convert.Open(ctx, src, opt)
	if err != nil {
		return err
	}
	defer s.Close()
	_, total := s.Progress()
	bar := progress.New(stderr, total, progress.Options{Desc: "import " + ref})
	d, m, err := c.blobs.Import(ctx, s.Raw(), func(int64) { done, _ := s.Progress(); bar.Set(done) })
	bar.Finish(err)
	if err != nil {
		return fmt.Errorf("import %s from %s: %w", ref, src, err)
	}
	mh, err := m.Hash()
	if err != nil {
		return err
	}
	blocks, data := m.NonZero()
	img := store.Image{Name: name, Version: version, Digest: d.String(), Size: m.Size, DataBytes: data, DataBlocks: blocks,
		ManifestHash: mh.String(), Source: src, Format: string(s.Format), Imported: time.Now().UTC(), ImportedBy: by}
	if _, err := c.st.PutImage(img); err != nil {
		// Nothing registered: take the blob back out too, unless another version has the same bytes.
		if _, rerr := c.st.ResolveImage(d.String()); rerr != nil {
			if derr := c.blobs.Delete(d); derr != nil {
				err = errors.Join(err, fmt.Errorf("and the unregistered blob could not be removed: %w", derr))
			}
		}
		return err
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stdout, "imported %s: %s\n  %d bytes (%s, %s), %d of %d blocks hold data, manifest %s\n  %.1f s, %.0f MB/s\n",
		ref, d, m.Size, s.Format, s.Detail, blocks, len(m.Blocks), mh, secs, float64(m.Size)/secs/1e6)
	return nil
}

func (c *catalog) list(stdout io.Writer) error {
	imgs, err := c.st.Images()
	if err != nil {
		return err
	}
	chs, err := c.st.Channels()
	if err != nil {
		return err
	}
	channels := map[string][]string{}
	for _, ch := range chs {
		k := ch.Name + "@" + ch.Version
		channels[k] = append(channels[k], ch.Channel)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tDATA\tCHANNELS\tIMPORTED")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", img.Ref(), shortDigest(img.Digest), mib(img.Size), mib(img.DataBytes),
			dash(strings.Join(channels[img.Ref()], ",")), img.Imported.Local().Format(time.DateTime))
	}
	if len(imgs) == 0 {
		fmt.Fprintln(tw, "(no images)")
	}
	return tw.Flush()
}

func (c *catalog) show(ref string, stdout io.Writer) error {
	img, err := c.st.ResolveImage(ref)
	if err != nil {
		return err
	}
	chs, err := c.st.Channels()
	if err != nil {
		return err
	}
	var mine []store.Channel
	for _, ch := range chs {
		if ch.Name == img.Name {
			mine = append(mine, ch)
		}
	}
	return printJSON(stdout, map[string]any{"image": img, "channels": mine})
}

func (c *catalog) verify(ctx context.Context, ref string, stdout io.Writer) error {
	img, err := c.st.ResolveImage(ref)
	if err != nil {
		return err
	}
	d, err := images.ParseDigest(img.Digest)
	if err != nil {
		return err
	}
	start := time.Now()
	r, err := c.blobs.Verify(ctx, d)
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
	fmt.Fprintf(stdout, "%s (%s): ok, %d blocks and the digest verified in %.1f s\n", img.Ref(), img.Digest, r.Blocks, time.Since(start).Seconds())
	return nil
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
