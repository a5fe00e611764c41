package initrd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ModuleSource says where the kernel modules come from. Set exactly one of Deb or Tree.
type ModuleSource struct {
	// Deb is a Debian kernel package (linux-image-<ver>-<arch>_*.deb), e.g. from DownloadKernel.
	Deb string
	// Tree is an extracted module tree: /lib/modules/<ver>, /lib/modules, or a root that holds
	// lib/modules/<ver> (and boot/vmlinuz-<ver>), such as the output of `dpkg -x`.
	Tree string
	// Version picks the kernel release when the source holds more than one.
	Version string
}

func (s ModuleSource) open() (source, error) {
	switch {
	case s.Deb != "" && s.Tree != "":
		return nil, errors.New("initrd: set only one of Modules.Deb and Modules.Tree")
	case s.Deb != "":
		return &debSource{path: s.Deb, version: s.Version}, nil
	case s.Tree != "":
		return &treeSource{root: s.Tree, version: s.Version}, nil
	}
	return nil, errors.New("initrd: no module source: set Modules.Deb or Modules.Tree")
}

// source is a kernel package or tree. index lists what is there; modinfo reads one module's
// metadata (and may keep its bytes); fetch fills data for the chosen modules and returns the
// kernel image when asked.
type source interface {
	index(ctx context.Context) (*index, error)
	modinfo(ctx context.Context, m *module) error
	fetch(ctx context.Context, idx *index, mods []*module, kernel bool) ([]byte, error)
}

type index struct {
	version string
	mods    map[string]*module // by normalized name
	builtin map[string]bool    // from modules.builtin
	where   string             // for error messages
}

type module struct {
	name    string
	rel     string // path relative to lib/modules/<ver>, e.g. kernel/drivers/net/virtio_net.ko
	info    *modinfo
	data    []byte // the plain .ko, once fetched
	visited int8   // resolve's DFS state
}

// add records a module file, preferring updates/ over kernel/ over anything else, as depmod's
// default search order does.
func (idx *index) add(rel string) {
	name := normalizeName(rel)
	if old, ok := idx.mods[name]; ok && rank(old.rel) <= rank(rel) {
		return
	}
	idx.mods[name] = &module{name: name, rel: rel}
}

func rank(rel string) int {
	switch {
	case strings.HasPrefix(rel, "updates/"):
		return 0
	case strings.HasPrefix(rel, "kernel/"):
		return 1
	}
	return 2
}

// parseBuiltin reads modules.builtin: one path per line, such as kernel/net/packet/af_packet.ko.
func parseBuiltin(b []byte) map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			m[normalizeName(l)] = true
		}
	}
	return m
}

// treeSource is an extracted tree on disk. Modules are read lazily: only the closure of the
// requested names is ever opened.
type treeSource struct {
	root, version string
	verDir        string
}

func (t *treeSource) index(ctx context.Context) (*index, error) {
	verDir, err := t.findVersionDir()
	if err != nil {
		return nil, err
	}
	t.verDir = verDir
	idx := &index{version: filepath.Base(verDir), mods: map[string]*module{}, where: verDir}
	err = filepath.WalkDir(verDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && isModuleFile(d.Name()) {
			rel, err := filepath.Rel(verDir, p)
			if err != nil {
				return err
			}
			idx.add(filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initrd: scan %s: %w", verDir, err)
	}
	if len(idx.mods) == 0 {
		return nil, fmt.Errorf("initrd: no kernel modules (*.ko) under %s", verDir)
	}
	b, err := os.ReadFile(filepath.Join(verDir, "modules.builtin"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	idx.builtin = parseBuiltin(b)
	return idx, nil
}

// findVersionDir accepts /lib/modules/<ver>, /lib/modules or a root holding lib/modules/<ver>
// (or usr/lib/modules/<ver>, where merged-/usr distributions put them).
func (t *treeSource) findVersionDir() (string, error) {
	isVerDir := func(d string) bool {
		for _, f := range []string{"kernel", "modules.order", "modules.builtin"} {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				return true
			}
		}
		return false
	}
	if _, err := os.Stat(t.root); err != nil {
		return "", fmt.Errorf("initrd: module tree: %w", err)
	}
	if isVerDir(t.root) {
		if t.version != "" && filepath.Base(t.root) != t.version {
			return "", fmt.Errorf("initrd: %s is the tree of kernel %s, not %s", t.root, filepath.Base(t.root), t.version)
		}
		return t.root, nil
	}
	for _, parent := range []string{filepath.Join(t.root, "lib", "modules"), filepath.Join(t.root, "usr", "lib", "modules"), t.root} {
		ents, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		var vers []string
		for _, e := range ents {
			if e.IsDir() && isVerDir(filepath.Join(parent, e.Name())) {
				vers = append(vers, e.Name())
			}
		}
		if v, err := pickVersion(vers, t.version, parent); err != nil || v != "" {
			return filepath.Join(parent, v), err
		}
	}
	return "", fmt.Errorf("initrd: no kernel module tree in %s (want /lib/modules/<ver>, or a root with lib/modules/<ver>)", t.root)
}

// pickVersion chooses among the kernel releases found; "" with no error means none was found.
func pickVersion(vers []string, want, where string) (string, error) {
	sort.Strings(vers)
	switch {
	case len(vers) == 0:
		return "", nil
	case want != "":
		for _, v := range vers {
			if v == want {
				return v, nil
			}
		}
		return "", fmt.Errorf("initrd: no kernel %s in %s (have %s)", want, where, strings.Join(vers, ", "))
	case len(vers) > 1:
		return "", fmt.Errorf("initrd: %s holds several kernels (%s): set Modules.Version", where, strings.Join(vers, ", "))
	}
	return vers[0], nil
}

func (t *treeSource) modinfo(ctx context.Context, m *module) error {
	b, err := os.ReadFile(filepath.Join(t.verDir, filepath.FromSlash(m.rel)))
	if err != nil {
		return err
	}
	if m.data, err = decompressModule(ctx, m.rel, b); err != nil {
		return err
	}
	mi, err := parseModinfo(m.data)
	if err != nil {
		return err
	}
	m.info = &mi
	return nil
}

func (t *treeSource) fetch(ctx context.Context, idx *index, mods []*module, kernel bool) ([]byte, error) {
	// modinfo already read every chosen module. The kernel sits in boot/ beside lib/modules.
	if !kernel {
		return nil, nil
	}
	clean := filepath.ToSlash(filepath.Clean(t.verDir))
	var root string
	switch dir := path.Dir(clean); {
	case strings.HasSuffix(dir, "/usr/lib/modules") || dir == "usr/lib/modules":
		root = path.Dir(path.Dir(path.Dir(dir)))
	case strings.HasSuffix(dir, "/lib/modules") || dir == "lib/modules":
		root = path.Dir(path.Dir(dir))
	default:
		return nil, fmt.Errorf("initrd: cannot find the kernel for %s: the tree is not under lib/modules/<ver>", t.verDir)
	}
	p := filepath.Join(filepath.FromSlash(root), "boot", "vmlinuz-"+idx.version)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("initrd: kernel: %w", err)
	}
	return b, nil
}
