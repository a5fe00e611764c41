package initrd

import (
	"context"
	"fmt"
	"strings"
)

// resolve turns the requested names into the modules to ship, dependencies first, following
// each module's modinfo "depends=" transitively (what depmod would write to modules.dep) and
// "softdep=pre:" names that are modules. The order is deterministic: requested names in the
// order given, each module's dependencies in the order modpost listed them.
func resolve(ctx context.Context, src source, idx *index, names []string) ([]*module, []string, error) {
	var (
		order   []*module
		notes   []string
		missing []string
	)
	var visit func(m *module, chain []string) error
	visit = func(m *module, chain []string) error {
		switch m.visited {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("initrd: module dependency cycle: %s", strings.Join(append(chain, m.name), " -> "))
		}
		m.visited = 1
		chain = append(chain, m.name)
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.info == nil {
			if err := src.modinfo(ctx, m); err != nil {
				return fmt.Errorf("initrd: module %s (%s): %w", m.name, m.rel, err)
			}
		}
		if m.info.vermagic != "" && m.info.vermagic != idx.version {
			return fmt.Errorf("initrd: module %s was built for kernel %s, but the tree is kernel %s", m.name, m.info.vermagic, idx.version)
		}
		for _, d := range m.info.depends {
			dm, ok := idx.mods[d]
			if !ok {
				if idx.builtin[d] {
					continue
				}
				return fmt.Errorf("%w: %s needs %s, which is neither in %s nor built in", ErrModuleNotFound, strings.Join(chain, " -> "), d, idx.where)
			}
			if err := visit(dm, chain); err != nil {
				return err
			}
		}
		for _, d := range m.info.softPre {
			dm, ok := idx.mods[d]
			if !ok {
				if !idx.builtin[d] {
					notes = append(notes, fmt.Sprintf("softdep %q of %s is not a module name; skipped", d, m.name))
				}
				continue
			}
			if err := visit(dm, chain); err != nil {
				return err
			}
		}
		m.visited = 2
		order = append(order, m)
		return nil
	}

	for _, raw := range names {
		name, optional := strings.CutSuffix(strings.TrimSpace(raw), "?")
		name = normalizeName(name)
		if name == "" {
			continue
		}
		m, ok := idx.mods[name]
		switch {
		case ok:
			if err := visit(m, nil); err != nil {
				return nil, nil, err
			}
		case idx.builtin[name]:
			notes = append(notes, fmt.Sprintf("%s is built into kernel %s; skipped", name, idx.version))
		case optional:
			notes = append(notes, fmt.Sprintf("%s (optional) is not in kernel %s; skipped", name, idx.version))
		default:
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("%w: %s: neither a module in %s nor built in (mark a name optional with a trailing '?')",
			ErrModuleNotFound, strings.Join(missing, ", "), idx.where)
	}
	return order, notes, nil
}
