package redfish

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/internal/power"
)

const maxPages = 100 // of a paged collection; far more than any chassis holds

// Systems lists every ComputerSystem behind the BMC with its power state, health, boot override
// and NIC MACs. Members are read concurrently, within Config.MaxConcurrent.
func (c *Client) Systems(ctx context.Context) ([]power.System, error) {
	paths, err := c.systemPaths(ctx)
	if err != nil {
		return nil, fmt.Errorf("redfish: list systems: %w", err)
	}
	out := make([]power.System, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.MaxConcurrent)
	for i, p := range paths {
		g.Go(func() error {
			s, err := c.readSystem(gctx, p)
			if err != nil {
				return err
			}
			out[i], err = c.describe(gctx, s)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("redfish: list systems: %w", err)
	}
	return out, nil
}

// System reads one system by the ID Systems gave it.
func (c *Client) System(ctx context.Context, id string) (power.System, error) {
	s, err := c.findSystem(ctx, id)
	if err != nil {
		return power.System{}, fmt.Errorf("redfish: read system %s: %w", id, err)
	}
	ps, err := c.describe(ctx, s)
	if err != nil {
		return power.System{}, fmt.Errorf("redfish: read system %s: %w", id, err)
	}
	return ps, nil
}

// systemPaths reads the Systems collection, following nextLink pages.
func (c *Client) systemPaths(ctx context.Context) ([]string, error) {
	if err := c.ensure(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	next := string(c.root.Systems)
	c.mu.Unlock()
	var paths []string
	for page := 0; next != "" && page < maxPages; page++ {
		var col collection
		if _, err := c.call(ctx, request{method: http.MethodGet, path: next}, &col); err != nil {
			return nil, err
		}
		for _, m := range col.Members {
			if m != "" {
				paths = append(paths, string(m))
			}
		}
		next = col.NextLink
	}
	return paths, nil
}

// readSystem GETs a ComputerSystem and learns its ID.
func (c *Client) readSystem(ctx context.Context, p string) (*system, error) {
	resp, err := c.call(ctx, request{method: http.MethodGet, path: p}, nil)
	if err != nil {
		return nil, err
	}
	s, err := decodeSystem(resp.body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", resp.path, err)
	}
	if s.ODataID == "" {
		s.ODataID = p
	}
	s.etag = resp.header.Get("ETag")
	c.mu.Lock()
	c.ids[strings.ToUpper(systemID(s))] = s.ODataID
	c.mu.Unlock()
	return s, nil
}

// findSystem finds the system called id: by the path learnt before, else among the collection's
// members whose last path segment gives id, else by reading them all.
func (c *Client) findSystem(ctx context.Context, id string) (*system, error) {
	if strings.TrimSpace(id) == "" {
		return nil, fmt.Errorf("%w: empty system id", power.ErrNotFound)
	}
	key := strings.ToUpper(id)
	c.mu.Lock()
	p, ok := c.ids[key]
	c.mu.Unlock()
	if ok {
		s, err := c.readSystem(ctx, p)
		switch {
		case err == nil && strings.EqualFold(systemID(s), id):
			return s, nil
		case err != nil && !errors.Is(err, power.ErrNotFound):
			return nil, err
		}
		c.mu.Lock()
		delete(c.ids, key)
		c.mu.Unlock()
	}
	paths, err := c.systemPaths(ctx)
	if err != nil {
		return nil, err
	}
	var rest []string
	for _, p := range paths {
		if !strings.EqualFold(normalID(path.Base(strings.TrimSuffix(p, "/")), ""), id) {
			rest = append(rest, p)
			continue
		}
		s, err := c.readSystem(ctx, p)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(systemID(s), id) {
			return s, nil
		}
	}
	for _, p := range rest {
		s, err := c.readSystem(ctx, p)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(systemID(s), id) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: no system %q among %d", power.ErrNotFound, id, len(paths))
}

// describe turns a system into a power.System, reading its NICs for their MACs.
func (c *Client) describe(ctx context.Context, s *system) (power.System, error) {
	ps := power.System{
		ID:           systemID(s),
		Name:         s.Name,
		Manufacturer: s.Manufacturer,
		Model:        s.Model,
		SerialNumber: s.SerialNumber,
		Health:       string(s.Status.Health),
		Power:        powerState(s.PowerState),
		ResetTypes:   s.Actions.Reset.Allowable,
		Boot: power.BootOverride{
			Target:  bootTarget(s.Boot.BootSourceOverrideTarget),
			Enabled: string(s.Boot.BootSourceOverrideEnabled),
			Mode:    string(s.Boot.BootSourceOverrideMode),
			Targets: s.bootTargets(),
		},
	}
	if s.Boot.HTTPBootURI != nil {
		ps.Boot.URI = *s.Boot.HTTPBootURI
	}
	seen := make(map[string]bool)
	if s.EthernetInterfaces != "" {
		macs, err := c.nicMACs(ctx, string(s.EthernetInterfaces), seen)
		if err != nil {
			return power.System{}, err
		}
		ps.MACs = macs
	}
	ps.MACs = append(ps.MACs, parseMACs(s.HostCorrelation.HostMACAddress, seen)...)
	return ps, nil
}

func (s *system) bootTargets() []string {
	if len(s.Boot.AllowableTargets) > 0 {
		return s.Boot.AllowableTargets
	}
	return s.Boot.SupportedTargets
}

// nicMACs reads the EthernetInterfaces collection. A BMC without one (404) has no MACs to give.
func (c *Client) nicMACs(ctx context.Context, p string, seen map[string]bool) ([]net.HardwareAddr, error) {
	var col collection
	if _, err := c.call(ctx, request{method: http.MethodGet, path: p}, &col); err != nil {
		if errors.Is(err, power.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	var macs []net.HardwareAddr
	for _, m := range col.Members {
		var nic ethernetInterface
		if _, err := c.call(ctx, request{method: http.MethodGet, path: string(m)}, &nic); err != nil {
			if errors.Is(err, power.ErrNotFound) {
				continue // removed since the collection was read
			}
			return nil, err
		}
		mac := nic.MACAddress
		if mac == "" {
			mac = nic.PermanentMACAddress
		}
		macs = append(macs, parseMACs([]string{mac}, seen)...)
	}
	return macs, nil
}

var cartridgeRE = []*regexp.Regexp{
	regexp.MustCompile(`(?i)^c(\d+)\s*n(\d+)$`),                          // "c1n1", "C10N2"
	regexp.MustCompile(`(?i)^cartridge\s*(\d+)\s*[,/]?\s*node\s*(\d+)$`), // "Cartridge 1 Node 1"
}

// systemID is the ID a system goes by: the Moonshot cartridge and node ("C1N1") when its Id or
// Name give them, else its Id, else the last segment of its path.
func systemID(s *system) string {
	id := s.ID
	if id == "" {
		id = path.Base(strings.TrimSuffix(s.ODataID, "/"))
	}
	return normalID(id, s.Name)
}

func normalID(id, name string) string {
	for _, v := range []string{id, name} {
		for _, re := range cartridgeRE {
			if m := re.FindStringSubmatch(strings.TrimSpace(v)); m != nil {
				cart, _ := strconv.Atoi(m[1])
				node, _ := strconv.Atoi(m[2])
				return fmt.Sprintf("C%dN%d", cart, node)
			}
		}
	}
	return id
}
