package initrd

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
)

// debSource reads a Debian kernel package.
//
// A .deb is an ar archive whose data.tar is xz-compressed in bookworm (zstd or gz elsewhere). Go's
// standard library has no xz decoder, so `dpkg-deb --fsys-tarfile` (present wherever apt-get
// downloads the package) unpacks it to a plain tar stream, which is read here with archive/tar.
// Only lib/modules/<ver>/**.ko*, modules.builtin and boot/vmlinuz-<ver> are looked at.
//
// The stream is read twice: the first pass reads the .modinfo of every module (about 4,000,
// 400 MB uncompressed, for Debian's 6.1) without keeping them, the second keeps only the modules
// the resolution chose. Dependencies can come before or after their users in the tar order, so
// one pass would have to hold every module in memory. Each pass takes about 5 s (xz).
type debSource struct {
	path, version string
}

// debPath matches the files of interest: group 1 is the kernel release, group 2 the path below
// lib/modules/<ver> (or the boot/vmlinuz-<ver> name).
var (
	debModPath  = regexp.MustCompile(`^(?:\./)?(?:usr/)?lib/modules/([^/]+)/(.+)$`)
	debBootPath = regexp.MustCompile(`^(?:\./)?boot/vmlinuz-(.+)$`)
)

func (d *debSource) index(ctx context.Context) (*index, error) {
	type perVersion struct {
		idx     *index
		builtin []byte
	}
	vers := map[string]*perVersion{}
	get := func(v string) *perVersion {
		if vers[v] == nil {
			vers[v] = &perVersion{idx: &index{version: v, mods: map[string]*module{}, where: d.path + " (lib/modules/" + v + ")"}}
		}
		return vers[v]
	}
	err := d.walk(ctx, func(name string, r io.Reader) error {
		m := debModPath.FindStringSubmatch(name)
		if m == nil {
			return nil
		}
		pv := get(m[1])
		switch rel := m[2]; {
		case rel == "modules.builtin":
			b, err := io.ReadAll(r)
			pv.builtin = b
			return err
		case isModuleFile(rel):
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			plain, err := decompressModule(ctx, rel, b)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			mi, err := parseModinfo(plain)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			pv.idx.add(rel)
			if mod := pv.idx.mods[normalizeName(rel)]; mod.rel == rel {
				mod.info = &mi
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for v, pv := range vers {
		if len(pv.idx.mods) > 0 {
			names = append(names, v)
		}
	}
	v, err := pickVersion(names, d.version, d.path)
	if err != nil {
		return nil, err
	}
	if v == "" {
		return nil, fmt.Errorf("initrd: %s holds no kernel modules (lib/modules/<ver>/**.ko): is it a linux-image package?", d.path)
	}
	idx := vers[v].idx
	idx.builtin = parseBuiltin(vers[v].builtin)
	return idx, nil
}

func (d *debSource) modinfo(ctx context.Context, m *module) error {
	// index read every module's modinfo already.
	return fmt.Errorf("no modinfo for %s", m.rel)
}

func (d *debSource) fetch(ctx context.Context, idx *index, mods []*module, kernel bool) ([]byte, error) {
	want := map[string]*module{}
	for _, m := range mods {
		want[m.rel] = m
	}
	var vmlinuz []byte
	err := d.walk(ctx, func(name string, r io.Reader) error {
		if m := debModPath.FindStringSubmatch(name); m != nil && m[1] == idx.version {
			mod := want[m[2]]
			if mod == nil {
				return nil
			}
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			mod.data, err = decompressModule(ctx, mod.rel, b)
			return err
		}
		if m := debBootPath.FindStringSubmatch(name); kernel && m != nil && m[1] == idx.version {
			var err error
			vmlinuz, err = io.ReadAll(r)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if m.data == nil {
			return nil, fmt.Errorf("initrd: %s: module %s vanished between two reads", d.path, m.rel)
		}
	}
	if kernel && vmlinuz == nil {
		return nil, fmt.Errorf("initrd: %s has no boot/vmlinuz-%s", d.path, idx.version)
	}
	return vmlinuz, nil
}

// walk runs dpkg-deb --fsys-tarfile and calls fn for each regular file of the data archive.
func (d *debSource) walk(ctx context.Context, fn func(name string, r io.Reader) error) error {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return errors.New("initrd: reading a .deb needs dpkg-deb (Debian's dpkg package); or pass an extracted tree (dpkg -x)")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", d.path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("initrd: dpkg-deb: %w", err)
	}
	werr := func() error {
		tr := tar.NewReader(out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				_, err = io.Copy(io.Discard, out) // let dpkg-deb finish writing
				return err
			}
			if err != nil {
				return err
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			if err := fn(h.Name, tr); err != nil {
				return err
			}
		}
	}()
	if werr != nil {
		cancel() // stop dpkg-deb rather than wait for it to fill a pipe nobody reads
	}
	cerr := cmd.Wait()
	if werr != nil {
		return fmt.Errorf("initrd: read %s: %w", d.path, werr)
	}
	if cerr != nil {
		return fmt.Errorf("initrd: dpkg-deb --fsys-tarfile %s: %w: %s", d.path, cerr, strings.TrimSpace(stderr.String()))
	}
	return nil
}
