package cloud

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Probe is what a smoke test asks of the instance: a TCP connect, or an HTTP GET answered 2xx.
type Probe struct {
	Kind string // tcp or http
	Port int
	Path string // http: path and query, "/" by default
}

// ParseProbe parses "tcp:PORT" or "http://:PORT/PATH" (port 80 and path / by default). The host is
// left out: the probe goes to the instance's address.
func ParseProbe(s string) (Probe, error) {
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "tcp":
		port, err := parsePort(rest)
		if err != nil {
			return Probe{}, fmt.Errorf("cloud: probe %q: %w", s, err)
		}
		return Probe{Kind: "tcp", Port: port}, nil
	case "http":
		u, err := url.Parse(s)
		switch {
		case err != nil:
			return Probe{}, fmt.Errorf("cloud: probe %q: %w", s, err)
		case u.Opaque != "" || u.Host == "":
			return Probe{}, fmt.Errorf("cloud: probe %q: want http://:PORT/PATH", s)
		case u.User != nil || u.Hostname() != "":
			return Probe{}, fmt.Errorf("cloud: probe %q names a host (%s): leave it out, the probe goes to the instance's address (http://:PORT/PATH)", s, u.Host)
		}
		p := Probe{Kind: "http", Port: 80, Path: u.RequestURI()}
		if u.Port() != "" {
			if p.Port, err = parsePort(u.Port()); err != nil {
				return Probe{}, fmt.Errorf("cloud: probe %q: %w", s, err)
			}
		}
		return p, nil
	}
	return Probe{}, fmt.Errorf("cloud: probe %q: want tcp:PORT or http://:PORT/PATH", s)
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return n, nil
}

// String is the probe as ParseProbe reads it.
func (p Probe) String() string {
	if p.Kind == "http" {
		return "http://:" + strconv.Itoa(p.Port) + p.Path
	}
	return p.Kind + ":" + strconv.Itoa(p.Port)
}

func (p Probe) check() error {
	if p.Kind != "tcp" && p.Kind != "http" || p.Port < 1 || p.Port > 65535 || p.Kind == "http" && !strings.HasPrefix(p.Path, "/") {
		return fmt.Errorf("cloud: smoke: invalid probe %+v", p)
	}
	return nil
}

// probe tries the probe every probeEvery until it passes or tctx ends.
func (s *smoke) probe(tctx context.Context, addr netip.Addr) error {
	target := netip.AddrPortFrom(addr, uint16(s.opt.Probe.Port)).String()
	client := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true}, // no proxy: the instance is reached directly
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var last error
	for {
		actx, cancel := context.WithTimeout(tctx, probeAttempt)
		err := s.opt.Probe.try(actx, client, target)
		cancel()
		if err != nil && tctx.Err() != nil && last != nil {
			err = last // cut short by the deadline: the previous answer says more
		}
		s.rep.Probes++
		if err == nil {
			s.event("probe %s at %s passed (attempt %d)", s.opt.Probe, target, s.rep.Probes)
			return nil
		}
		if last == nil || err.Error() != last.Error() {
			s.event("probe %s at %s: %v", s.opt.Probe, target, err)
		}
		last = err
		t := time.NewTimer(probeEvery)
		select {
		case <-tctx.Done():
			t.Stop()
			return s.over(tctx, "probing "+s.opt.Probe.String()+" at "+target, last)
		case <-t.C:
		}
	}
}

func (p Probe) try(ctx context.Context, client *http.Client, target string) error {
	if p.Kind == "tcp" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+p.Path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", p.Path, resp.Status)
	}
	return nil
}
