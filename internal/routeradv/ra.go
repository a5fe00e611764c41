// Package routeradv sends IPv6 Router Advertisements on the netboot segment. They exist only so that
// iPXE's IPv6 autoconfiguration finishes at once: without any RA, iPXE's ifconf waits about
// 13-16 s per boot stage for one (lab pitfall P2). The advertisements carry the prefix as
// on-link and autonomous (SLAAC), no M/O flags (no DHCPv6) and a router lifetime of 0: imaged
// is not a default router.
//
// Only cmd/imaged imports this package.
package routeradv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Config configures a Sender.
type Config struct {
	// Interface is where advertisements are sent and solicitations answered.
	Interface string
	// Prefix is advertised on-link and autonomous. SLAAC needs a /64 (RFC 4862 §5.5.3 with the
	// 64-bit interface identifiers of RFC 4291 §2.5.1).
	Prefix netip.Prefix
	// Interval is the time between unsolicited advertisements (default 30s). Solicitations
	// are answered at once regardless.
	Interval time.Duration
	// ValidLifetime and PreferredLifetime of the prefix (defaults 1h and 30m).
	ValidLifetime, PreferredLifetime time.Duration
}

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("ra: invalid config")

// RFC 4861 §10 protocol constants.
const (
	maxInitialAdverts  = 3           // MAX_INITIAL_RTR_ADVERTISEMENTS
	initialInterval    = time.Second // RFC: at most MAX_INITIAL_RTR_ADVERT_INTERVAL (16 s); sooner is allowed and helps boot
	retryNoLinkLocal   = 500 * time.Millisecond
	retryAnswer        = 100 * time.Millisecond
	maxPendingAnswers  = 16
	solicitedPerSecond = 20
)

// Sender advertises Config.Prefix on Config.Interface.
type Sender struct {
	cfg  Config
	ifi  *net.Interface
	conn *ndp.Conn
	log  *slog.Logger
	ra   *ndp.RouterAdvertisement
}

// New validates cfg and opens the ICMPv6 socket (which needs CAP_NET_RAW).
func New(cfg Config, log *slog.Logger) (*Sender, error) {
	if cfg.Interface == "" {
		return nil, fmt.Errorf("%w: interface is required", ErrInvalidConfig)
	}
	if !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is6() || cfg.Prefix.Addr().Is4In6() || cfg.Prefix.Bits() != 64 {
		return nil, fmt.Errorf("%w: prefix %v is not an IPv6 /64", ErrInvalidConfig, cfg.Prefix)
	}
	cfg.Prefix = cfg.Prefix.Masked()
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.ValidLifetime == 0 {
		cfg.ValidLifetime = time.Hour
	}
	if cfg.PreferredLifetime == 0 {
		cfg.PreferredLifetime = 30 * time.Minute
	}
	if cfg.Interval < time.Second || cfg.PreferredLifetime > cfg.ValidLifetime {
		return nil, fmt.Errorf("%w: interval %v under 1s or preferred lifetime %v above valid lifetime %v",
			ErrInvalidConfig, cfg.Interval, cfg.PreferredLifetime, cfg.ValidLifetime)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("ra: interface %q: %w", cfg.Interface, err)
	}
	// Bound to the unspecified address: the link-local source we must use (RFC 4861 §4.2) may
	// still be tentative (DAD) when we start. Each send picks it explicitly instead.
	conn, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return nil, fmt.Errorf("ra: listen on %s: %w", ifi.Name, err)
	}
	if err := setup(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ra: set up socket on %s: %w", ifi.Name, err)
	}
	return &Sender{cfg: cfg, ifi: ifi, conn: conn, log: log.With("component", "ra", "interface", ifi.Name),
		ra: advertisement(cfg, ifi.HardwareAddr)}, nil
}

func setup(conn *ndp.Conn) error {
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := conn.SetICMPFilter(&f); err != nil {
		return err
	}
	// Solicitations go to all-routers (RFC 4861 §6.3.7).
	if err := conn.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
		return err
	}
	// The socket is not bound to the interface: tell solicitations apart by interface index.
	return conn.SetControlMessage(ipv6.FlagInterface, true)
}

// advertisement is the RA we send.
func advertisement(cfg Config, mac net.HardwareAddr) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		// 0 = unspecified: we do not tell hosts how to set hop limit, reachable time, retrans.
		CurrentHopLimit: 0,
		// No M/O flags: no DHCPv6, so iPXE's ipv6conf is done as soon as it has this RA.
		ManagedConfiguration: false,
		OtherConfiguration:   false,
		// RFC 4861 §4.2: "A Lifetime of 0 indicates that the router is not a default router".
		RouterLifetime: 0,
		Options: []ndp.Option{&ndp.PrefixInformation{
			PrefixLength:                   uint8(cfg.Prefix.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: true,
			ValidLifetime:                  cfg.ValidLifetime,
			PreferredLifetime:              cfg.PreferredLifetime,
			Prefix:                         cfg.Prefix.Addr(),
		}},
	}
	if len(mac) == 6 {
		// RFC 4861 §4.2: SHOULD be included so receivers need not resolve our address.
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	return ra
}

// solicitation reports whether an ICMPv6 message b is a Router Solicitation.
func solicitation(b []byte) bool {
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return false
	}
	_, ok := m.(*ndp.RouterSolicitation)
	return ok
}

// Run advertises until ctx is done, then returns nil.
func (s *Sender) Run(ctx context.Context) error {
	solicited := make(chan netip.Addr, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.readSolicitations(solicited)
	}()
	defer func() {
		s.conn.Close()
		wg.Wait()
	}()
	s.log.Info("sending router advertisements", "prefix", s.cfg.Prefix, "interval", s.cfg.Interval)

	allNodes := netip.MustParseAddr("ff02::1")
	timer := time.NewTimer(0)
	defer timer.Stop()
	// Answers that could not be sent yet (our link-local address still in DAD) are retried.
	pending := map[netip.Addr]bool{}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	sent := 0
	var lastAnswer time.Time
	answered := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			if err := s.send(allNodes); err != nil {
				s.log.Debug("router advertisement not sent; retrying", "err", err)
				timer.Reset(retryNoLinkLocal)
				continue
			}
			sent++
			timer.Reset(nextAdvert(sent, s.cfg.Interval, rand.N[time.Duration]))
		case <-retry.C:
			for dst := range pending {
				if err := s.send(dst); err != nil {
					s.log.Debug("answer to router solicitation not sent; retrying", "to", dst, "err", err)
					retry.Reset(retryAnswer)
					break
				}
				delete(pending, dst)
			}
		case src := <-solicited:
			// RFC 4861 §6.2.6 delays answers by up to 0.5 s so that several routers do not
			// answer at once, and may unicast the answer to the soliciting host. We are the
			// only advertiser on a segment built for netboot, and speed is the point, so we
			// answer at once, unicast when we can, and rate-limit instead.
			now := time.Now()
			if now.Sub(lastAnswer) >= time.Second {
				lastAnswer, answered = now, 0
			}
			if answered >= solicitedPerSecond {
				continue
			}
			answered++
			dst := allNodes
			if src.IsLinkLocalUnicast() {
				dst = src
			}
			if err := s.send(dst); err != nil {
				s.log.Debug("answer to router solicitation not sent yet", "to", dst, "err", err)
				if len(pending) < maxPendingAnswers {
					pending[dst] = true
				}
				retry.Reset(retryAnswer)
			}
		}
	}
}

// nextAdvert is the delay before the next unsolicited advertisement once sent have gone out
// (RFC 4861 §6.2.4): the first MAX_INITIAL_RTR_ADVERTISEMENTS come quickly, the rest uniformly
// between MinRtrAdvInterval (here 3/4 of the interval) and MaxRtrAdvInterval. randN(n) draws
// from [0, n).
func nextAdvert(sent int, interval time.Duration, randN func(time.Duration) time.Duration) time.Duration {
	if sent < maxInitialAdverts {
		return initialInterval
	}
	return interval*3/4 + randN(interval/4+1)
}

func (s *Sender) readSolicitations(out chan<- netip.Addr) {
	b := make([]byte, max(s.ifi.MTU, 1280))
	for {
		n, cm, src, err := s.conn.ReadRaw(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("read", "err", err)
			continue
		}
		if cm != nil && cm.IfIndex != 0 && cm.IfIndex != s.ifi.Index {
			continue // another interface's
		}
		if !solicitation(b[:n]) {
			continue
		}
		select {
		case out <- src.WithZone(""):
		default: // a burst: the answers already queued will do
		}
	}
}

// send sends the advertisement to dst from our link-local address.
func (s *Sender) send(dst netip.Addr) error {
	src, err := s.linkLocal()
	if err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: src.AsSlice(), IfIndex: s.ifi.Index}
	return s.conn.WriteTo(s.ra, cm, dst)
}

// linkLocal returns the interface's link-local address (RFC 4861 §4.2: the source of an RA
// "MUST be the link-local address assigned to the interface").
func (s *Sender) linkLocal() (netip.Addr, error) {
	addrs, err := s.ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("no link-local address on %s yet", s.ifi.Name)
}
