// Package tftp is imaged's read-only TFTP server (RFC 1350 with the option extensions of RFC
// 2347, blksize RFC 2348, tsize and timeout RFC 2349, windowsize RFC 7440). It serves netboot
// firmware the first stage (ipxe.efi, undionly.kpxe) from an ordered list of directories opened
// with os.Root, refuses writes, bounds the transfers in flight and drains them on shutdown.
//
// It is a protocol leaf: it imports nothing of imaged. cmd/imaged adapts its Observer.
//
// The data path is its own rather than github.com/pin/tftp/v3's server (the tests use pin/tftp's
// client as an independent peer). pin/tftp v3.1.0 answers every error with code 1, negotiates
// only blksize and tsize (windowsize is dropped; its SetAnticipate streams a window the client
// never agreed to), has no way to cancel transfers, starts a second transfer for a retransmitted
// RRQ, and at 512-byte blocks ran at a third of tftpd-hpa's speed (see socket_linux.go).
package tftp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the server's configuration. Zero durations and counts take the defaults below.
type Config struct {
	// Listen is the UDP address to serve on, such as "10.99.0.1:69" or ":69" (":0" in tests).
	Listen string
	// Roots are read-only directories searched in order: the boot-assets directory first, then
	// e.g. /usr/lib/ipxe. The first root holding a name serves it.
	Roots []string
	// Timeout is how long to wait for an ACK before retransmitting (default 1 s). A client's
	// RFC 2349 timeout option replaces it for its transfer, up to MaxTimeout.
	Timeout time.Duration
	// MaxTimeout bounds the RFC 2349 timeout a client may negotiate (default 5 s). A larger one is
	// declined (left out of the OACK) and Timeout applies: see negotiate.
	MaxTimeout time.Duration
	// FirstACKTimeout bounds the time from a request to the client's first ACK (of the OACK or of
	// block 1), across retransmissions (default 10 s). A PXE client answers within milliseconds;
	// a client that never answers frees its slot by then even with a long negotiated timeout.
	// After the first ACK, a client that stops answering holds its slot for at most its timeout
	// × (Retries + 1).
	FirstACKTimeout time.Duration
	// Retries is how many times one packet is retransmitted before the transfer is given up
	// (default 5).
	Retries int
	// MaxBlockSize caps the RFC 2348 blksize a client may negotiate (default and maximum 65464).
	// The server further caps it to the MTU of the interface the request came in on, so a block
	// is never IP-fragmented: many PXE ROMs do not reassemble fragments.
	MaxBlockSize int
	// MaxWindow caps the RFC 7440 windowsize (default 16; 1 turns windows off).
	MaxWindow int
	// MaxTransfers bounds the transfers in flight (default 64); more are refused with an ERROR.
	// Each transfer holds one OS thread while it waits for ACKs.
	MaxTransfers int
	// MaxPerClient bounds the transfers in flight from one client address (default 4), so that
	// one host cannot take every slot; more are refused with an ERROR. A PXE client needs two at
	// most (UEFI's tsize probe and the transfer); the rest is room for a ROM that resends its
	// request from a new port while its first transfer is still timing out.
	MaxPerClient int
	// DrainTimeout bounds how long Run waits for transfers in flight once its context is done
	// (default 10 s); those still running then are aborted with an ERROR to the client.
	DrainTimeout time.Duration
}

const (
	defaultTimeout      = time.Second
	defaultRetries      = 5
	defaultMaxWindow    = 16
	defaultMaxTransfers = 64
	defaultMaxPerClient = 4
	defaultMaxTimeout   = 5 * time.Second
	defaultFirstACK     = 10 * time.Second
	defaultDrainTimeout = 10 * time.Second
	// windowBytes bounds the memory of one transfer's window (windowsize × blksize).
	windowBytes = 1 << 20
)

// Deps are the server's collaborators. Log and Registerer may be nil (no logs, no metrics
// registered); Observer is optional.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
	Observer   Observer
}

// Observer is told about every read request once it ends, whatever its outcome. TransferDone
// runs on the transfer's goroutine and must return quickly.
type Observer interface {
	TransferDone(Transfer)
}

// Transfer describes one read request once it has ended.
type Transfer struct {
	Remote    netip.AddrPort
	File      string        // the name as the client sent it
	Bytes     int64         // bytes the client acknowledged (after conversion, in netascii mode)
	BlockSize int           // negotiated block size: 512 without blksize, 0 if refused before
	Duration  time.Duration // from the request to the end
	Outcome   string        // one of the Outcome constants
}

// Server is a read-only TFTP server. Create it with New, then call Run once.
type Server struct {
	cfg   Config
	log   *slog.Logger
	obs   Observer
	m     *metrics
	conn  *net.UDPConn
	roots []*os.Root
	slots chan struct{} // one token per transfer in flight

	running  atomic.Bool
	stopping atomic.Bool // set when the drain deadline passes: transfers abort

	mu        sync.Mutex
	active    map[netip.AddrPort]*transfer // by client TID
	perClient map[netip.Addr]int           // transfers in flight by client address
	wg        sync.WaitGroup
}

// New validates cfg, opens the roots and binds the UDP socket, so that a bad address or a missing
// directory fails here, before anything serves.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := setDefaults(&cfg); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       deps.Log,
		obs:       deps.Observer,
		m:         newMetrics(),
		slots:     make(chan struct{}, cfg.MaxTransfers),
		active:    make(map[netip.AddrPort]*transfer),
		perClient: make(map[netip.Addr]int),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	ok := false
	defer func() {
		if !ok {
			s.closeRoots()
			if s.conn != nil {
				s.conn.Close()
			}
		}
	}()
	for _, dir := range cfg.Roots {
		r, err := os.OpenRoot(dir)
		if err != nil {
			return nil, fmt.Errorf("tftp: open root: %w", err)
		}
		s.roots = append(s.roots, r)
	}
	pc, err := net.ListenPacket("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("tftp: listen: %w", err)
	}
	s.conn = pc.(*net.UDPConn)
	v6 := s.conn.LocalAddr().(*net.UDPAddr).IP.To4() == nil
	if err := enablePktInfo(s.conn, v6); err != nil {
		return nil, fmt.Errorf("tftp: enable IP_PKTINFO on %s: %w", cfg.Listen, err)
	}
	if err := s.m.register(deps.Registerer); err != nil {
		s.m.unregister(deps.Registerer)
		return nil, err
	}
	ok = true
	return s, nil
}

func setDefaults(c *Config) error {
	switch {
	case c.Listen == "":
		return errors.New("tftp: config: no listen address")
	case len(c.Roots) == 0:
		return errors.New("tftp: config: no roots")
	case c.Timeout < 0, c.MaxTimeout < 0, c.FirstACKTimeout < 0, c.Retries < 0, c.MaxWindow < 0,
		c.MaxTransfers < 0, c.MaxPerClient < 0, c.DrainTimeout < 0:
		return errors.New("tftp: config: negative timeout, retries, window, transfers or drain timeout")
	case c.MaxBlockSize != 0 && (c.MaxBlockSize < defaultBlockSize || c.MaxBlockSize > maxBlockSize):
		return fmt.Errorf("tftp: config: max block size %d outside [%d, %d]", c.MaxBlockSize, defaultBlockSize, maxBlockSize)
	case c.MaxWindow > 65535: // RFC 7440: "Valid values range between 1 and 65535 blocks"
		return fmt.Errorf("tftp: config: max window %d above 65535", c.MaxWindow)
	}
	set := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	set(&c.Retries, defaultRetries)
	set(&c.MaxBlockSize, maxBlockSize)
	set(&c.MaxWindow, defaultMaxWindow)
	set(&c.MaxTransfers, defaultMaxTransfers)
	set(&c.MaxPerClient, defaultMaxPerClient)
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setD(&c.Timeout, defaultTimeout)
	setD(&c.MaxTimeout, defaultMaxTimeout)
	setD(&c.FirstACKTimeout, defaultFirstACK)
	setD(&c.DrainTimeout, defaultDrainTimeout)
	return nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Run serves until ctx is done. Then it stops accepting requests, waits for the transfers in
// flight (at most Config.DrainTimeout, after which it aborts them) and returns nil.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("tftp: Run called twice")
	}
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	err := s.accept(ctx)
	s.conn.Close()
	s.drain()
	s.closeRoots()
	return err
}

func (s *Server) accept(ctx context.Context) error {
	// RFC 2347: "The maximum size of a request packet is 512 octets." Read more, so that a
	// longer one from a sloppy client is seen whole (and served) rather than truncated.
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for {
		n, oobn, flags, from, err := s.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: read request: %w", err)
		}
		if ctx.Err() != nil {
			// Read before context.AfterFunc closed the socket: once ctx is done no request
			// starts a transfer, however the two race.
			return nil
		}
		if flags&syscall.MSG_TRUNC != 0 {
			s.ignore(ignoredMalformed, from, "oversized packet")
			continue
		}
		local, ifIndex := parsePktInfo(oob[:oobn])
		s.handle(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), local, ifIndex)
	}
}

// handle does the bounded work for one packet on the listening port: decode, refuse or start a
// transfer on its own goroutine.
func (s *Server) handle(pkt []byte, from netip.AddrPort, local netip.Addr, ifIndex int) {
	req, err := parseRequest(pkt)
	if err != nil {
		// Stray DATA/ACK/ERROR on port 69 and garbage get no answer: answering unsolicited
		// packets only feeds loops and reflection.
		s.ignore(ignoredMalformed, from, err.Error())
		return
	}
	log := s.log.With("remote", from.String(), "file", req.name)
	refuse := func(code uint16, msg string) {
		if err := sendOnce(local, from, ifIndex, appendError(nil, code, msg)); err != nil {
			s.m.ignored.WithLabelValues(ignoredSendError).Inc()
			log.Warn("tftp: send error packet", "err", err)
		}
	}
	if req.op == opWRQ {
		s.m.ignored.WithLabelValues(ignoredWrite).Inc()
		log.Warn("tftp: write request refused: read-only server")
		refuse(codeAccessViolation, "access violation: read-only server")
		return
	}
	if req.mode != "octet" && req.mode != "netascii" {
		// RFC 1350 §1: "The mail mode is obsolete and should not be implemented or used."
		// Anything else is not TFTP.
		s.m.ignored.WithLabelValues(ignoredMode).Inc()
		log.Warn("tftp: unsupported transfer mode", "mode", req.mode)
		refuse(codeIllegal, "unsupported mode: use octet")
		return
	}

	now := time.Now()
	t := &transfer{s: s, log: log, req: req, remote: from, local: local, ifIndex: ifIndex, start: now,
		firstACKBy: now.Add(s.cfg.FirstACKTimeout)}
	s.mu.Lock()
	if _, dup := s.active[from]; dup {
		s.mu.Unlock()
		// The client retransmitted its RRQ before our first answer reached it; the transfer
		// already running answers it.
		s.ignore(ignoredDuplicate, from, req.name)
		return
	}
	// The per-client cap comes first: a host over it is told so even when every slot is taken,
	// and the two refusals are counted apart (client_busy: one host asks too much; busy: the
	// server is full).
	if s.perClient[from.Addr()] >= s.cfg.MaxPerClient {
		s.mu.Unlock()
		log.Warn("tftp: too many transfers from this client, request refused", "max", s.cfg.MaxPerClient)
		refuse(codeUndefined, "too many transfers from this address, retry later")
		s.done(Transfer{Remote: from, File: req.name, Outcome: OutcomeClientBusy})
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.mu.Unlock()
		log.Warn("tftp: too many transfers in flight, request refused", "max", s.cfg.MaxTransfers)
		refuse(codeUndefined, "server busy, retry later")
		s.done(Transfer{Remote: from, File: req.name, Outcome: OutcomeBusy})
		return
	}
	s.active[from] = t
	s.perClient[from.Addr()]++
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.inFlight.Inc()
	go func() {
		defer s.wg.Done()
		tr := t.run()
		s.mu.Lock()
		delete(s.active, from)
		if s.perClient[from.Addr()]--; s.perClient[from.Addr()] == 0 {
			delete(s.perClient, from.Addr())
		}
		s.mu.Unlock()
		<-s.slots
		s.m.inFlight.Dec()
		s.done(tr)
	}()
}

func (s *Server) ignore(reason string, from netip.AddrPort, detail string) {
	s.m.ignored.WithLabelValues(reason).Inc()
	s.log.Debug("tftp: packet ignored", "reason", reason, "remote", from.String(), "detail", detail)
}

// done records the end of a read request in the metrics and tells the Observer.
func (s *Server) done(tr Transfer) {
	s.m.transfers.WithLabelValues(tr.Outcome).Inc()
	s.m.bytes.Add(float64(tr.Bytes))
	if tr.Outcome == OutcomeOK {
		s.m.duration.Observe(tr.Duration.Seconds())
	}
	if s.obs != nil {
		s.obs.TransferDone(tr)
	}
}

// drain waits for the transfers in flight, at most DrainTimeout; then it aborts the rest.
func (s *Server) drain() {
	all := make(chan struct{})
	go func() { s.wg.Wait(); close(all) }()
	deadline := time.NewTimer(s.cfg.DrainTimeout)
	defer deadline.Stop()
	select {
	case <-all:
		return
	case <-deadline.C:
	}
	s.stopping.Store(true)
	s.mu.Lock()
	s.log.Warn("tftp: drain deadline passed, aborting transfers", "in_flight", len(s.active))
	for _, t := range s.active {
		t.interrupt()
	}
	s.mu.Unlock()
	<-all
}

func (s *Server) closeRoots() {
	for _, r := range s.roots {
		r.Close()
	}
	s.roots = nil
}
