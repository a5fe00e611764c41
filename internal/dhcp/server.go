package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxPacketLen bounds what is read per datagram. DHCP clients send at most what fits in one
// Ethernet frame (option 57 is at most 1500 in practice; EDK2 and iPXE say 1472).
const maxPacketLen = 1500

// Server is a DHCP server, proxyDHCP server or nothing, per Config.Mode.
type Server struct {
	cfg      Config
	inv      Inventory
	store    LeaseStore
	obs      Observer
	log      *slog.Logger
	m        *metrics
	table    *table // ModeServer only
	unknowns *throttle

	conns   []*listener
	bcast   netip.Addr // 255.255.255.255; tests point it at loopback
	now     func() time.Time
	running atomic.Bool
	bufs    sync.Pool
	writes  chan struct{} // semaphore of pending lease writes
	writing sync.WaitGroup
}

type listener struct {
	conn *net.UDPConn
	pxe  bool // the PXE boot-server port (4011) of proxy mode
}

// New validates cfg, loads persisted leases (ModeServer) and binds the sockets, so that a bad
// interface or a taken port fails here rather than in Run.
func New(cfg Config, deps Deps) (*Server, error) {
	s, err := build(cfg, deps)
	if err != nil || s.cfg.Mode == ModeOff {
		return s, err
	}
	if err := s.checkInterface(); err != nil {
		return nil, err
	}
	addrs := []string{s.cfg.ListenAddr}
	if s.cfg.Mode == ModeProxy {
		addrs = append(addrs, s.cfg.ProxyListenAddr)
	}
	for i, a := range addrs {
		c, err := listen(s.cfg.Interface, a)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("dhcp: listen on %s (%s): %w", a, s.cfg.Interface, err)
		}
		s.conns = append(s.conns, &listener{conn: c, pxe: i == 1})
	}
	return s, nil
}

// build is New without the sockets.
func build(cfg Config, deps Deps) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		inv:      deps.Inventory,
		store:    deps.Leases,
		obs:      deps.Observer,
		log:      deps.Log,
		unknowns: newThrottle(5*time.Minute, 4096, 30),
		bcast:    netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		now:      time.Now,
	}
	s.bufs.New = func() any { b := make([]byte, maxPacketLen+1); return &b }
	s.writes = make(chan struct{}, cfg.MaxPendingWrites)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "dhcp")
	if s.inv == nil {
		s.inv = noInventory{}
	}
	if s.obs == nil {
		s.obs = noObserver{}
	}
	if cfg.Mode == ModeOff {
		return s, nil
	}
	if cfg.Mode == ModeServer {
		if s.store == nil {
			return nil, fmt.Errorf("%w: server mode needs a lease store", ErrInvalidConfig)
		}
		s.table = newTable(cfg)
		ls, err := s.store.Leases()
		if err != nil {
			return nil, fmt.Errorf("dhcp: load leases: %w", err)
		}
		s.table.load(ls, s.now())
		s.log.Info("leases loaded", "count", len(ls))
	}
	if s.m, err = newMetrics(deps.Registerer, cfg.Mode, s.table, func() time.Time { return s.now() }); err != nil {
		return nil, err
	}
	return s, nil
}

// checkInterface makes sure the interface exists and carries ServerIP: replies name ServerIP as
// their server identifier, and clients send their REQUESTs to it.
func (s *Server) checkInterface() error {
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("dhcp: interface %q: %w", s.cfg.Interface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("dhcp: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == s.cfg.ServerIP {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: server IP %v is not an address of interface %s", ErrInvalidConfig, s.cfg.ServerIP, ifi.Name)
}

// Addrs returns the bound local addresses: the DHCP socket, then (proxy mode) the PXE one.
func (s *Server) Addrs() []netip.AddrPort {
	var as []netip.AddrPort
	for _, l := range s.conns {
		as = append(as, l.conn.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return as
}

func (s *Server) close() {
	for _, l := range s.conns {
		_ = l.conn.Close()
	}
}

type job struct {
	buf  *[]byte
	n    int
	src  netip.AddrPort
	from *listener
}

// Run serves until ctx is done, then stops reading, finishes the packets already queued and
// returns nil. It returns an error only if a socket fails.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Mode == ModeOff {
		<-ctx.Done()
		return nil
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("dhcp: Run called twice")
	}
	defer s.close()
	s.log.Info("serving", "mode", s.cfg.Mode, "interface", s.cfg.Interface, "addrs", s.Addrs(),
		"unknown", s.cfg.Unknown)

	jobs := make(chan job, 8*s.cfg.Workers)
	var workers sync.WaitGroup
	for range s.cfg.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				s.serve(j)
			}
		}()
	}
	rctx, stop := context.WithCancel(ctx)
	errs := make(chan error, len(s.conns))
	var readers sync.WaitGroup
	for _, l := range s.conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := s.read(rctx, l, jobs); err != nil {
				errs <- err
				stop()
			}
		}()
	}
	<-rctx.Done()
	for _, l := range s.conns {
		_ = l.conn.SetReadDeadline(time.Unix(1, 0)) // unblock the readers
	}
	readers.Wait()
	stop()
	close(jobs)
	workers.Wait()   // drain: queued packets are still answered
	s.writing.Wait() // and lease writes finish, with their ACKs
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func (s *Server) read(ctx context.Context, l *listener, jobs chan<- job) error {
	for {
		buf := s.bufs.Get().(*[]byte)
		n, src, err := l.conn.ReadFromUDPAddrPort(*buf)
		if err != nil {
			s.bufs.Put(buf)
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: read %s: %w", l.conn.LocalAddr(), err)
		}
		select {
		case jobs <- job{buf: buf, n: n, src: src, from: l}:
		default:
			// Overloaded: drop rather than queue without bound. Clients retransmit.
			s.bufs.Put(buf)
			s.m.packet("none", DispositionOverload)
		}
	}
}

func (s *Server) serve(j job) {
	start := time.Now()
	r, ok := s.decide((*j.buf)[:j.n], j.src, j.from.pxe)
	s.bufs.Put(j.buf)
	if !ok {
		s.m.handle.Observe(time.Since(start).Seconds())
		return
	}
	if r.write == nil {
		s.send(j.from, s.complete(r), r.dst, start)
		return
	}
	// A lease write waits for the store's batched commit (bbolt's Batch waits up to 10 ms to
	// gather writes). It runs off the packet workers, so that DISCOVERs keep flowing meanwhile,
	// and many writes pending at once make big batches. MaxPendingWrites bounds them; when all
	// are taken, the workers wait here (back-pressure) and the socket queue fills.
	s.writes <- struct{}{}
	s.writing.Add(1)
	go func() {
		defer func() { <-s.writes; s.writing.Done() }()
		s.send(j.from, s.complete(r), r.dst, start)
	}()
}

func (s *Server) send(l *listener, reply *dhcpv4.DHCPv4, dst netip.AddrPort, start time.Time) {
	if reply != nil {
		if _, err := l.conn.WriteToUDPAddrPort(reply.ToBytes(), dst); err != nil {
			// As text: slog writes a net.HardwareAddr (a byte slice without MarshalText) as its bytes.
			s.log.Warn("send reply", "dst", dst, "mac", reply.ClientHWAddr.String(), "err", err)
			s.m.packet("none", DispositionError)
		} else {
			s.m.replies.WithLabelValues(typeName(reply)).Inc()
		}
	}
	s.m.handle.Observe(time.Since(start).Seconds())
}

type noInventory struct{}

func (noInventory) Lookup(net.HardwareAddr) (Host, bool) { return Host{}, false }

type noObserver struct{}

func (noObserver) Observe(Observation) {}
