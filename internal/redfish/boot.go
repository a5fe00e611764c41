package redfish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/imaged/imaged/internal/power"
)

// bootPatch is the PATCH body of a boot override. Mode is omitted unless it must change.
type bootPatch struct {
	Boot struct {
		BootSourceOverrideTarget  schemas.BootSource                `json:",omitempty"`
		BootSourceOverrideEnabled schemas.BootSourceOverrideEnabled `json:",omitempty"`
		BootSourceOverrideMode    schemas.BootSourceOverrideMode    `json:",omitempty"`
		HTTPBootURI               string                            `json:"HttpBootUri,omitempty"`
	}
}

// SetBootOnce points the system's next boot, and only that one, at target (uri is the boot URL
// for power.UefiHttp). power.None clears the override. It returns once the override was read
// back as set.
func (c *Client) SetBootOnce(ctx context.Context, id string, target power.BootTarget, uri string) error {
	if err := checkBoot(target, uri); err != nil {
		return fmt.Errorf("redfish: set boot override on %s: %w", id, err)
	}
	if err := c.setBootOnce(ctx, id, target, uri); err != nil {
		return fmt.Errorf("redfish: set boot override %s on %s: %w", target, id, err)
	}
	return nil
}

func checkBoot(target power.BootTarget, uri string) error {
	if !slices.Contains(power.BootTargets, target) {
		return fmt.Errorf("%w: boot target %q", power.ErrUnsupported, target)
	}
	if target != power.UefiHttp {
		if uri != "" {
			return fmt.Errorf("a boot URI is only for %s", power.UefiHttp)
		}
		return nil
	}
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s needs an absolute http(s) boot URI, not %q", power.UefiHttp, uri)
	}
	return nil
}

func (c *Client) setBootOnce(ctx context.Context, id string, target power.BootTarget, uri string) error {
	s, err := c.findSystem(ctx, id)
	if err != nil {
		return err
	}
	want, enabled := bootSource(target), schemas.OnceBootSourceOverrideEnabled
	if target == power.None {
		enabled = schemas.DisabledBootSourceOverrideEnabled
	}
	for try := 0; ; try++ {
		body, err := c.bootPatch(s, target, want, enabled, uri)
		if err != nil {
			return err
		}
		// Some BMCs (iLO 5) demand If-Match on PATCH: send the ETag of the read we based the
		// change on, when the service gave one.
		_, err = c.call(ctx, request{method: http.MethodPatch, path: s.ODataID, body: body, ifMatch: s.ifMatch()}, nil)
		if errors.Is(err, power.ErrPrecondition) && try == 0 {
			// 412: the system changed since we read it (its ETag moved on); 428: the BMC wants
			// an If-Match we had no ETag for. Read it again and try once more.
			c.log.Debug("boot override precondition failed; reading the system again", "system", id, "err", err)
			if s, err = c.readSystem(ctx, s.ODataID); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	_, err = c.await(ctx, s.ODataID, fmt.Sprintf("boot override %s/%s", want, enabled), func(s *system) bool {
		b := s.Boot
		if target == power.None {
			return b.BootSourceOverrideEnabled == schemas.DisabledBootSourceOverrideEnabled || b.BootSourceOverrideTarget == schemas.NoneBootSource
		}
		return b.BootSourceOverrideTarget == want && b.BootSourceOverrideEnabled == enabled &&
			(target != power.UefiHttp || b.HTTPBootURI != nil && *b.HTTPBootURI == uri)
	})
	return err
}

func (s *system) ifMatch() string {
	if s.etag != "" {
		return s.etag
	}
	return s.ODataEtag
}

// bootPatch builds the PATCH for s, refusing what the BMC says it does not offer.
func (c *Client) bootPatch(s *system, target power.BootTarget, want schemas.BootSource, enabled schemas.BootSourceOverrideEnabled, uri string) ([]byte, error) {
	if ts := s.bootTargets(); len(ts) > 0 && target != power.None && !slices.Contains(ts, string(want)) {
		return nil, fmt.Errorf("%w: the BMC offers boot targets %v, not %s", power.ErrUnsupported, ts, want)
	}
	var p bootPatch
	p.Boot.BootSourceOverrideTarget = want
	p.Boot.BootSourceOverrideEnabled = enabled
	if target == power.UefiHttp {
		p.Boot.HTTPBootURI = uri
		// UEFI HTTP boot needs UEFI mode. Mode is sent only to change it from Legacy, and only
		// where writable: iLO refuses any write of BootSourceOverrideMode (Quirks.NoBootModeWrite).
		if s.Boot.BootSourceOverrideMode == schemas.LegacyBootSourceOverrideMode {
			c.mu.Lock()
			q := c.quirks
			c.mu.Unlock()
			modes := s.Boot.AllowableModes
			switch {
			case q.NoBootModeWrite:
				return nil, fmt.Errorf("%w: the system boots in Legacy mode and this BMC (%s) cannot change BootSourceOverrideMode; switch its BIOS to UEFI", power.ErrUnsupported, q.Name)
			case len(modes) > 0 && !slices.Contains(modes, string(schemas.UEFIBootSourceOverrideMode)):
				return nil, fmt.Errorf("%w: the system boots in Legacy mode and the BMC offers modes %v", power.ErrUnsupported, modes)
			}
			p.Boot.BootSourceOverrideMode = schemas.UEFIBootSourceOverrideMode
		}
	}
	return jsonBody(p)
}
