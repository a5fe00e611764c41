package jobs

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/imaged/imaged/internal/machines"
)

// NetProber probes a machine at its inventory address (machines.Machine.IP).
type NetProber struct {
	Client *http.Client // nil: a client that follows no redirects
}

// Probe connects (tcp) or GETs (http) and expects the probe's status.
func (p NetProber) Probe(ctx context.Context, m machines.Machine, pr Probe) error {
	if !m.IP.IsValid() {
		return fmt.Errorf("machine %s has no address in the inventory to probe", m.ID)
	}
	hostport := net.JoinHostPort(m.IP.String(), strconv.Itoa(pr.Port))
	switch pr.Kind {
	case "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", hostport)
		if err != nil {
			return err
		}
		return c.Close()
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+pr.Path, nil)
		if err != nil {
			return err
		}
		c := p.Client
		if c == nil {
			c = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		want := pr.Status
		if want == 0 {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			return fmt.Errorf("GET %s: %s, want %d", req.URL, resp.Status, want)
		}
		return nil
	}
	return nil // check-in only: nothing to probe
}
