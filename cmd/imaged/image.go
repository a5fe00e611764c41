package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/images/convert"
	"github.com/imaged/imaged/internal/api"
	imagecat "github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/progressbar"
	"github.com/imaged/imaged/internal/store"
)

// imagesDir is where the blob store lives under the state directory.
func imagesDir(cfg *config.File) string { return filepath.Join(cfg.StateDir, "images") }

// catalog is the image catalog and the blob store, for one command. When no daemon runs, the
// command opens the state file itself; when the daemon holds it, the command goes through the
// daemon's control socket (as root or imaged's user) and gets the same checks and records.
type catalog struct {
	st     *store.Store         // nil when remote
	svc    *imagecat.Service    // over st
	inv    *inventory.Inventory // over st
	remote *controlClient
	blobs  *blobstore.Store // always local: imports write here, verify reads here
	by     string
}

func openCatalog(cfg *config.File, readOnly bool, by string) (*catalog, error) {
	blobs, err := blobstore.Open(imagesDir(cfg))
	if err != nil {
		return nil, err
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, "imaged.db"), store.Options{ReadOnly: readOnly, Timeout: 250 * time.Millisecond})
	if errors.Is(err, store.ErrLocked) {
		return &catalog{remote: newControlClient(cfg.HTTP.ControlSocket, by), blobs: blobs, by: by}, nil
	}
	if err != nil {
		return nil, err
	}
	c := &catalog{st: st, svc: imagecat.New(st, blobs, nil), blobs: blobs, by: by}
	if !readOnly {
		// The config is the inventory's source of truth; bring the stored one up to date so that
		// a machine added to the config can be assigned before the daemon has run.
		if err := st.SyncMachines(machinesFromConfig(cfg)); err != nil {
			st.Close()
			return nil, err
		}
		if c.inv, err = inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: cfg.Boot.TokenTTL.Duration}); err != nil {
			st.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *catalog) close() {
	if c.st != nil {
		c.st.Close()
	}
}

func (c *catalog) images(ctx context.Context) (api.Catalog, error) {
	var cat api.Catalog
	if c.remote != nil {
		return cat, c.remote.Do(ctx, "GET", "/api/v1/images", nil, &cat)
	}
	var err error
	if cat.Images, err = c.st.Images(); err != nil {
		return cat, err
	}
	cat.Channels, err = c.st.Channels()
	return cat, err
}

func (c *catalog) info(ctx context.Context, ref images.Ref) (api.ImageInfo, error) {
	var info api.ImageInfo
	if c.remote != nil {
		return info, c.remote.Do(ctx, "GET", "/api/v1/images/"+url.PathEscape(ref.String()), nil, &info)
	}
	var err error
	if info.Image, err = c.st.ResolveImage(ref); err != nil {
		return info, err
	}
	chs, err := c.st.Channels()
	for _, ch := range chs {
		if ch.Name == info.Image.Name {
			info.Channels = append(info.Channels, ch)
		}
	}
	return info, err
}

// register records a committed blob as img.Ref() (again with the same digest: a no-op).
func (c *catalog) register(ctx context.Context, img images.Image) error {
	if c.remote != nil {
		req := api.RegisterRequest{Name: img.Name, Version: img.Version, Digest: img.Digest.String(), Source: img.Source, Format: img.Format}
		var got images.Image
		if err := c.remote.Do(ctx, "POST", "/api/v1/images", req, &got); err != nil {
			return err
		}
		if got.Digest != img.Digest || got.ManifestHash != img.ManifestHash {
			return fmt.Errorf("imaged registered %s as %s with manifest %s, but this import made %s with %s",
				img.Ref(), got.Digest, got.ManifestHash, img.Digest, img.ManifestHash)
		}
		return nil
	}
	_, err := c.st.PutImage(img)
	return err
}

func (c *catalog) promote(ctx context.Context, name, version, channel string) (images.Channel, error) {
	var ch images.Channel
	if c.remote != nil {
		return ch, c.remote.Do(ctx, "POST", "/api/v1/images/"+url.PathEscape(name+"@"+version)+"/promote", api.PromoteRequest{Channel: channel}, &ch)
	}
	return c.st.Promote(name, version, channel, c.by)
}

func (c *catalog) rollback(ctx context.Context, name, channel string) (images.Channel, error) {
	var ch images.Channel
	if c.remote != nil {
		return ch, c.remote.Do(ctx, "POST", "/api/v1/images/"+url.PathEscape(name+"@"+channel)+"/rollback", nil, &ch)
	}
	return c.st.Rollback(name, channel, c.by)
}

func (c *catalog) deleteImage(ctx context.Context, name, version string) (api.DeleteReply, error) {
	var rep api.DeleteReply
	if c.remote != nil {
		return rep, c.remote.Do(ctx, "DELETE", "/api/v1/images/"+url.PathEscape(name+"@"+version), nil, &rep)
	}
	img, removed, err := c.svc.Delete(images.Ref{Name: name, Tag: version}, c.by)
	return api.DeleteReply{Image: img, BlobRemoved: removed}, err
}

func (c *catalog) prune(ctx context.Context, keep int) (api.PruneReply, error) {
	var rep api.PruneReply
	if c.remote != nil {
		return rep, c.remote.Do(ctx, "POST", "/api/v1/images/prune", api.PruneRequest{Keep: keep}, &rep)
	}
	pruned, kept, err := c.svc.Prune(keep, c.by)
	return api.PruneReply{Pruned: pruned, Kept: kept}, err
}

func (c *catalog) assign(ctx context.Context, id string, ref images.Ref) (api.AssignReply, error) {
	var rep api.AssignReply
	if c.remote != nil {
		return rep, c.remote.Do(ctx, "POST", "/api/v1/machines/"+url.PathEscape(id)+"/assign", api.AssignRequest{Image: ref.String()}, &rep)
	}
	img, err := c.st.ResolveImage(ref)
	if err != nil {
		return rep, err
	}
	m, err := c.inv.Assign(id, img, c.by)
	return api.AssignReply{Machine: m, Image: img}, err
}

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
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	c, err := openCatalog(cfg, sub == "list" || sub == "show" || sub == "verify", *by)
	if err != nil {
		return err
	}
	defer c.close()
	switch sub {
	case "import":
		return c.importImage(ctx, ref, a[1], convert.Options{S3Endpoint: *s3Endpoint, S3Region: *s3Region}, stdout, stderr)
	case "list":
		return c.list(ctx, stdout)
	case "show":
		info, err := c.info(ctx, ref)
		if err != nil {
			return err
		}
		return printJSON(stdout, info)
	case "verify":
		return c.verify(ctx, ref, stdout)
	case "delete":
		rep, err := c.deleteImage(ctx, ref.Name, ref.Tag)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s (%s)%s\n", rep.Image.Ref(), rep.Image.Digest, map[bool]string{true: ", blob removed", false: ", blob kept: another version has the same bytes"}[rep.BlobRemoved])
		return nil
	case "promote":
		ch, err := c.promote(ctx, ref.Name, ref.Tag, a[1])
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s@%s: %s → %s (by %s)\n", ref.Name, a[1], dash(mv.From), mv.To, mv.By)
		return nil
	case "rollback":
		ch, err := c.rollback(ctx, ref.Name, ref.Tag)
		if err != nil {
			return err
		}
		mv := ch.History[len(ch.History)-1]
		fmt.Fprintf(stdout, "%s rolled back: %s → %s (by %s)\n", ref, mv.From, mv.To, mv.By)
		return nil
	default: // prune
		rep, err := c.prune(ctx, *keep)
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

// importImage converts and stores source in one streaming pass, then registers it. The blob is
// committed only when the whole image has been read and hashed; the catalog entry only once the
// blob is committed. An error or an interrupt before that leaves neither.
func (c *catalog) importImage(ctx context.Context, ref images.Ref, src string, opt convert.Options, stdout, stderr io.Writer) error {
	name, version := ref.Name, ref.Tag
	if old, err := c.info(ctx, ref); err == nil && old.Image.Name == name && old.Image.Version == version {
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
	bar := progressbar.New(stderr, total, progressbar.Options{Desc: "import " + ref.String()})
	d, m, err := c.blobs.Import(ctx, s.Raw(), func(int64) { done, _ := s.Progress(); bar.Set(done) })
	bar.Finish(err)
	if err != nil {
		return fmt.Errorf("import %s from %s: %w", ref, shown, err)
	}
	mh, err := m.Hash()
	if err != nil {
		return err
	}
	blocks, data := m.NonZero()
	img := images.Image{Name: name, Version: version, Digest: d, Size: m.Size, DataBytes: data, DataBlocks: blocks,
		ManifestHash: mh, Source: src, Format: string(s.Format), Imported: time.Now().UTC(), ImportedBy: c.by}
	if err := c.register(ctx, img); err != nil {
		// Nothing registered: take the blob back out too, unless another version has the same bytes.
		if _, rerr := c.info(ctx, images.Ref{Digest: d}); rerr != nil {
			if derr := c.blobs.Delete(d); derr != nil {
				err = errors.Join(err, fmt.Errorf("and the unregistered blob could not be removed: %w", derr))
			}
		}
		return err
	}
	secs := time.Since(start).Seconds()
	format := string(s.Format)
	if s.Detail != "" {
		format += ", " + s.Detail
	}
	fmt.Fprintf(stdout, "imported %s: %s\n  %d bytes (%s), %d of %d blocks hold data, manifest %s\n  %.1f s, %.0f MB/s\n",
		ref, d, m.Size, format, blocks, len(m.Blocks), mh, secs, float64(m.Size)/secs/1e6)
	if removed != nil {
		fmt.Fprintf(stdout, "  source recorded as %s (without %s)\n", shown, strings.Join(removed, ", "))
	}
	return nil
}

func (c *catalog) list(ctx context.Context, stdout io.Writer) error {
	cat, err := c.images(ctx)
	if err != nil {
		return err
	}
	imgs := cat.Images
	channels := map[images.Ref][]string{}
	for _, ch := range cat.Channels {
		k := images.Ref{Name: ch.Name, Tag: ch.Version}
		channels[k] = append(channels[k], ch.Channel)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tDATA\tCHANNELS\tIMPORTED")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", img.Ref(), shortDigest(img.Digest.String()), mib(img.Size), mib(img.DataBytes),
			dash(strings.Join(channels[img.Ref()], ",")), img.Imported.Local().Format(time.DateTime))
	}
	if len(imgs) == 0 {
		fmt.Fprintln(tw, "(no images)")
	}
	return tw.Flush()
}

func (c *catalog) verify(ctx context.Context, ref images.Ref, stdout io.Writer) error {
	info, err := c.info(ctx, ref)
	if err != nil {
		return err
	}
	img := info.Image
	start := time.Now()
	r, err := c.blobs.Verify(ctx, img.Digest)
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
