package httplimit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is what a Limiter allows. Every field must be positive (Defaults fills them in).
type Config struct {
	MaxConns          int // TCP connections open at once, over every listener wrapped by Listen
	MaxConnsPerClient int // … from one client address

	MaxStreams          int // Stream requests (event streams) at once
	MaxStreamsPerClient int // … from one client address

	ReadTimeout   time.Duration // a Request's body must have arrived within this of its start
	WriteTimeout  time.Duration // a Request's answer, or one write of a Stream, must go out within this
	TransferStall time.Duration // a write of a Transfer must move within this
}

// Defaults are the limits for a chassis of blades with a few operators: each blade keeps about
// six connections while it writes (four parallel ranges, the agent API, a spare), a Roller or a
// dashboard a handful; a 64 KiB API body takes well under a second on any link the blades use.
var Defaults = Config{
	MaxConns: 1024, MaxConnsPerClient: 32,
	MaxStreams: 64, MaxStreamsPerClient: 4,
	ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, TransferStall: 30 * time.Second,
}

// Reasons for a refusal: the reason label of imaged_http_refused_total.
const (
	ReasonConnections       = "connections"        // MaxConns connections were open
	ReasonClientConnections = "client_connections" // MaxConnsPerClient from this address were open
	ReasonStreams           = "sse"                // MaxStreams event streams were open
	ReasonClientStreams     = "client_sse"         // MaxStreamsPerClient from this address were open
	ReasonReadTimeout       = "read_timeout"       // a body did not arrive within ReadTimeout
	ReasonWriteTimeout      = "write_timeout"      // an answer was not taken in time
)

var reasons = []string{ReasonConnections, ReasonClientConnections, ReasonStreams, ReasonClientStreams, ReasonReadTimeout, ReasonWriteTimeout}

// Limiter holds the counts that Listen and Handler share.
type Limiter struct {
	cfg   Config
	conns slots
	strms slots

	refused     *prometheus.CounterVec
	connections prometheus.Gauge
	streams     prometheus.Gauge
}

// New returns a Limiter for cfg; its metrics are registered with reg (if not nil).
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if cfg.MaxConns < 1 || cfg.MaxConnsPerClient < 1 || cfg.MaxStreams < 1 || cfg.MaxStreamsPerClient < 1 ||
		cfg.ReadTimeout <= 0 || cfg.WriteTimeout <= 0 || cfg.TransferStall <= 0 {
		return nil, fmt.Errorf("httplimit: every limit must be positive: %+v", cfg)
	}
	l := &Limiter{
		cfg:   cfg,
		conns: slots{max: cfg.MaxConns, perClient: cfg.MaxConnsPerClient, by: map[netip.Addr]int{}},
		strms: slots{max: cfg.MaxStreams, perClient: cfg.MaxStreamsPerClient, by: map[netip.Addr]int{}},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imaged_http_refused_total",
			Help: "HTTP connections and requests refused or cut, by reason (connections, client_connections, sse, client_sse, read_timeout, write_timeout).",
		}, []string{"reason"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imaged_http_connections",
			Help: "TCP connections open on the HTTP listeners.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imaged_http_event_streams",
			Help: "Event streams (GET /api/v1/events) open on the HTTP listeners.",
		}),
	}
	for _, r := range reasons {
		l.refused.WithLabelValues(r) // every reason is exported from the start, at 0
	}
	if reg != nil {
		if err := errors.Join(reg.Register(l.refused), reg.Register(l.connections), reg.Register(l.streams)); err != nil {
			return nil, fmt.Errorf("httplimit: %w", err)
		}
	}
	return l, nil
}

// Config returns the limits in force.
func (l *Limiter) Config() Config { return l.cfg }

func (l *Limiter) refuse(reason string) { l.refused.WithLabelValues(reason).Inc() }

// slots counts what is open, in total and by client address.
type slots struct {
	mu        sync.Mutex
	max       int
	perClient int
	n         int
	by        map[netip.Addr]int
}

// take reserves a slot for addr; ok is false when the total (client false) or addr's own
// (client true) limit is reached.
func (s *slots) take(addr netip.Addr) (ok, client bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by[addr] >= s.perClient {
		return false, true
	}
	if s.n >= s.max {
		return false, false
	}
	s.n++
	s.by[addr]++
	return true, false
}

func (s *slots) release(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if s.by[addr]--; s.by[addr] <= 0 {
		delete(s.by, addr)
	}
}

// clientAddr is the IP address of a remote address ("10.0.0.5:4711", or a net.Addr's String);
// an IPv4-mapped IPv6 address counts as the IPv4 address. The zero Addr stands for anything
// unparsable (one bucket for all of those).
func clientAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		if h, _, err := net.SplitHostPort(remote); err == nil {
			a, _ := netip.ParseAddr(h)
			return a.Unmap()
		}
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
