package redfish

import (
	"context"
	"fmt"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// await re-reads the system at p until done says it shows what was asked, polling with backoff
// (Config.PollInterval, doubling up to 8×) for Config.ReadbackTimeout at most. A change is only
// reported done once it has been read back: "command sent" is not success.
func (c *Client) await(ctx context.Context, p, what string, done func(*system) bool) (*system, error) {
	deadline := time.Now().Add(c.cfg.ReadbackTimeout)
	wait := c.cfg.PollInterval
	for reads := 1; ; reads++ {
		s, err := c.readSystem(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("read back %s: %w", what, err)
		}
		if done(s) {
			return s, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w: %s not read back within %s (%d reads; last seen: power %s, boot override %s/%s)",
				power.ErrTimeout, what, c.cfg.ReadbackTimeout, reads, s.PowerState,
				s.Boot.BootSourceOverrideTarget, s.Boot.BootSourceOverrideEnabled)
		}
		if err := sleep(ctx, min(wait, left)); err != nil {
			return nil, fmt.Errorf("read back %s: %w", what, err)
		}
		wait = min(2*wait, 8*c.cfg.PollInterval)
	}
}
