package tftp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// transfer serves one read request from its own socket (TID).
type transfer struct {
	s       *Server
	log     *slog.Logger
	req     request
	remote  netip.AddrPort
	local   netip.Addr // where the request was sent, when known
	ifIndex int
	start   time.Time

	// firstACKBy is when the transfer gives up if the client has not acknowledged anything yet
	// (Config.FirstACKTimeout after the request); started is set at the first ACK.
	firstACKBy time.Time
	started    bool
	shortWait  bool // SO_RCVTIMEO is below timeout, to end at firstACKBy

	sock *udpSock // set under s.mu, so that drain can interrupt it

	// negotiated, see negotiate
	blksize int
	window  int
	timeout time.Duration
	oack    []option
	tsize   bool // the OACK carries tsize

	acked int64 // file bytes the client acknowledged
}

var (
	errShutdown = errors.New("server shutting down")
	errNoACK    = errors.New("no ACK from the client within the first-ACK timeout")
)

// clientError is an ERROR packet from the client.
type clientError struct {
	code uint16
	msg  string
}

func (e *clientError) Error() string { return fmt.Sprintf("client sent error %d %q", e.code, e.msg) }

// run serves the request to its end and returns its record; it logs the outcome.
func (t *transfer) run() Transfer {
	outcome, err := t.serve()
	tr := Transfer{
		Remote: t.remote, File: t.req.name, Bytes: t.acked, BlockSize: t.blksize,
		Duration: time.Since(t.start), Outcome: outcome,
	}
	log := t.log.With("bytes", tr.Bytes, "blksize", tr.BlockSize, "duration", tr.Duration)
	switch outcome {
	case OutcomeOK:
		log.Info("tftp: file sent", "windowsize", t.window)
	case OutcomeTsizeProbe:
		// UEFI (EDK2 PxeBcDxe) first sends an RRQ with tsize only to learn the size, then aborts
		// after our OACK with "error 8 User aborted the transfer", then asks again. Normal.
		log.Debug("tftp: tsize probe aborted by the client (normal for UEFI)", "err", err)
	case OutcomeNotFound:
		log.Warn("tftp: file not found")
	case OutcomeAccessViolation:
		log.Warn("tftp: access violation", "err", err)
	default:
		log.Warn("tftp: transfer failed", "err", err)
	}
	return tr
}

func (t *transfer) serve() (outcome string, err error) {
	f, size, err := t.s.open(t.req.name)
	if err != nil {
		switch {
		case errors.Is(err, errNotFound):
			t.refuse(codeNotFound, "file not found")
			return OutcomeNotFound, err
		case errors.Is(err, errAccessViolation):
			t.refuse(codeAccessViolation, "access violation")
			return OutcomeAccessViolation, err
		}
		t.refuse(codeUndefined, "cannot read file")
		return OutcomeError, err
	}
	defer f.Close()

	t.negotiate(size, func() int { return linkMTU(t.ifIndex) })
	sock, err := dialUDP(t.local, t.remote, t.ifIndex, t.timeout)
	if err != nil {
		return OutcomeError, err
	}
	defer sock.close()
	t.s.mu.Lock()
	t.sock = sock
	t.s.mu.Unlock()

	if len(t.oack) > 0 {
		if err := t.sendOACK(); err != nil {
			var ce *clientError
			if errors.As(err, &ce) && t.tsize {
				// The client asked for tsize, got it in our OACK and stopped before block 1:
				// EDK2's size probe (PxeBcDxe sends "error 8 User aborted the transfer").
				// RFC 2347 also lets a client decline an OACK with ERROR 8 ("If the client
				// rejects the OACK, then it sends an ERROR packet, with error code 8"); either
				// way a client that asked for tsize has what it wanted and will ask again.
				return OutcomeTsizeProbe, err
			}
			return OutcomeError, t.fail(err)
		}
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var r io.Reader = br
	if t.req.mode == "netascii" {
		r = newNetasciiReader(br)
	}
	if err := t.sendData(r); err != nil {
		return OutcomeError, t.fail(err)
	}
	return OutcomeOK, nil
}

// refuse answers the request with an ERROR from a fresh TID.
func (t *transfer) refuse(code uint16, msg string) {
	if err := sendOnce(t.local, t.remote, t.ifIndex, appendError(nil, code, msg)); err != nil {
		t.log.Debug("tftp: send error packet", "err", err)
	}
}

// fail tells the client why the transfer stops, unless the client stopped it, and returns err.
func (t *transfer) fail(err error) error {
	var ce *clientError
	if errors.As(err, &ce) {
		return err // RFC 1350 §7: an error packet "is not acknowledged, and not retransmitted"
	}
	msg := "transfer aborted"
	switch {
	case errors.Is(err, errTimeout), errors.Is(err, errNoACK):
		msg = "timeout"
	case errors.Is(err, errShutdown):
		msg = errShutdown.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return err // the client is gone
	}
	_ = t.sock.write(appendError(nil, codeUndefined, msg))
	return err
}

func (t *transfer) interrupt() {
	if t.sock != nil {
		t.sock.interrupt()
	}
}

// negotiate picks the transfer's parameters from the request's options and fills t.oack with
// the options the server accepts, in the client's order. RFC 2347: options the server does not
// support are left out of the OACK, and the client then goes without them. size is the file's;
// mtu returns the MTU of the interface the request came in on (0 if unknown).
func (t *transfer) negotiate(size int64, mtu func() int) {
	cfg := t.s.cfg
	t.blksize, t.window, t.timeout = defaultBlockSize, 1, cfg.Timeout
	seen := make(map[string]bool)
	for _, o := range t.req.opts {
		if seen[o.name] {
			continue // a repeated option: the first one counts
		}
		seen[o.name] = true
		switch o.name {
		case "blksize":
			// RFC 2348: "Valid values range between "8" and "65464" octets, inclusive." and
			// the value in the OACK "must be less than or equal to the value specified by the
			// client".
			n, ok := t.req.optionInt("blksize", minBlockSize, maxBlockSize)
			if !ok {
				continue
			}
			t.blksize = min(n, cfg.MaxBlockSize, blockLimit(mtu(), t.remote.Addr().Is6()))
			t.oack = append(t.oack, option{"blksize", strconv.Itoa(t.blksize)})
		case "tsize":
			// RFC 2349: "In Read Request packets, a size of "0" is specified in the request and
			// the size of the file, in octets, is returned in the OACK." The netascii size is
			// not known before conversion, so netascii transfers leave tsize out.
			if t.req.mode != "octet" {
				continue
			}
			t.oack = append(t.oack, option{"tsize", strconv.FormatInt(size, 10)})
			t.tsize = true
		case "timeout":
			// RFC 2349: "Valid values range between "1" and "255" seconds, inclusive." The OACK
			// echoes the value: the server then retransmits after that many seconds.
			n, ok := t.req.optionInt("timeout", 1, 255)
			if !ok {
				continue
			}
			// A long timeout lets a client that never answers hold a transfer slot for
			// timeout × (Retries + 1): 255 s × 6 is 25 minutes. The server cannot offer a
			// shorter one instead, RFC 2349: "If the server is willing to accept the timeout
			// option, it sends an Option Acknowledgment (OACK) to the client. The specified
			// timeout value must match the value specified by the client." So it declines one
			// above MaxTimeout; RFC 2347: "Options not acknowledged by the server must be
			// ignored by the client and server as if they were never requested", and the
			// server's own Timeout applies.
			if time.Duration(n)*time.Second > cfg.MaxTimeout {
				continue
			}
			t.timeout = time.Duration(n) * time.Second
			t.oack = append(t.oack, option{"timeout", strconv.Itoa(n)})
		case "windowsize":
			// RFC 7440: "Valid values range between "1" and "65535" blocks, inclusive." Like
			// blksize, the server may answer a smaller window, bounded here by MaxWindow and by
			// windowBytes of buffer.
			n, ok := t.req.optionInt("windowsize", 1, 65535)
			if !ok {
				continue
			}
			t.window = n
			t.oack = append(t.oack, option{"windowsize", ""}) // value set below, with blksize known
		}
	}
	t.window = max(1, min(t.window, cfg.MaxWindow, windowBytes/t.blksize))
	for i := range t.oack {
		if t.oack[i].name == "windowsize" {
			t.oack[i].value = strconv.Itoa(t.window)
		}
	}
}

// startedNow records the client's first ACK and gives the socket back its full receive timeout.
func (t *transfer) startedNow() error {
	if t.started {
		return nil
	}
	t.started = true
	if t.shortWait {
		t.shortWait = false
		return t.sock.setTimeout(t.timeout)
	}
	return nil
}

// blockLimit is the largest block that fits one datagram on a link of this MTU: MTU − IP header −
// 8 bytes of UDP header − 4 of TFTP header. Larger blocks would be IP-fragmented, and many PXE
// ROMs do not reassemble fragments.
func blockLimit(mtu int, v6 bool) int {
	if mtu == 0 {
		return 1468 // unknown interface: a block that fits a 1500-byte Ethernet frame
	}
	ipHeader := 20
	if v6 {
		ipHeader = 40
	}
	return max(defaultBlockSize, mtu-ipHeader-8-4)
}

// sendOACK sends the option acknowledgment until the client acknowledges it. RFC 2347: "If the
// transfer was initiated with a Read Request, then an ACK (with the data block number set to 0)
// is sent by the client to confirm the values in the server's OACK packet."
func (t *transfer) sendOACK() error {
	pkt := appendOACK(nil, t.oack)
	buf := make([]byte, 516)
	for tries := 0; ; tries++ {
		if err := t.sock.write(pkt); err != nil {
			return err
		}
		_, err := t.await(buf, 0, 0)
		if errors.Is(err, errTimeout) && tries < t.s.cfg.Retries {
			continue
		}
		return err
	}
}

// sendData sends the file in blocks of blksize, window blocks at a time, and returns once the
// client has acknowledged the last one. RFC 1350 §5: "The block numbers on data packets begin
// with one and increase by one for each new block of data." They are 16 bits on the wire and
// roll over from 65535 to 0 (files over 32 MiB at 512-byte blocks), the common convention that
// RFC 1350 leaves unsaid. A block shorter than blksize, possibly empty, ends the file (RFC 1350
// §2: "A data packet of less than 512 bytes signals termination of a transfer").
//
// With windowsize > 1 (RFC 7440) the client acknowledges the last block of a window, or the last
// block it got in order; sending resumes after the block acknowledged (go-back-N). An ACK for a
// block already acknowledged is ignored and only the timeout retransmits: answering duplicate
// ACKs is the "Sorcerer's Apprentice" bug (RFC 1123 §4.2.3.1), which would double every packet.
func (t *transfer) sendData(r io.Reader) error {
	b, w := t.blksize, t.window
	slot := 4 + b
	ring := make([]byte, w*slot) // block n lives in slot n % w until acknowledged
	lens := make([]int, w)
	buf := make([]byte, 516)
	var acked, read int64 // last block acknowledged, last block read
	last := int64(-1)     // the final block's number, once read
	lastLen := 0
	for retries := 0; ; {
		for read < acked+int64(w) && last < 0 {
			n := read + 1
			p := ring[int(n%int64(w))*slot:][:slot]
			k, err := io.ReadFull(r, p[4:])
			switch err {
			case nil:
			case io.EOF, io.ErrUnexpectedEOF:
				last, lastLen = n, k
			default:
				return fmt.Errorf("read file: %w", err)
			}
			binary.BigEndian.PutUint16(p, opDATA)
			binary.BigEndian.PutUint16(p[2:], uint16(n))
			lens[n%int64(w)] = 4 + k
			read = n
		}
		for n := acked + 1; n <= read; n++ {
			i := int(n % int64(w))
			if err := t.sock.write(ring[i*slot:][:lens[i]]); err != nil {
				return err
			}
		}
		n, err := t.await(buf, acked+1, read)
		switch {
		case err == nil:
			acked, retries = n, 0
			if acked == last {
				t.acked = (last-1)*int64(b) + int64(lastLen)
				return nil
			}
			t.acked = acked * int64(b)
		case errors.Is(err, errTimeout) && retries < t.s.cfg.Retries:
			retries++ // RFC 1350: on timeout, retransmit what is not acknowledged
		default:
			return err
		}
	}
}

// await reads until the client acknowledges a block numbered in [lo, hi] and returns that number.
// Other ACKs are ignored; an ERROR from the client is a *clientError.
//
// Until the client's first ACK the wait also ends at firstACKBy (errNoACK), and the socket's
// receive timeout is shortened to match.
func (t *transfer) await(buf []byte, lo, hi int64) (int64, error) {
	deadline := time.Now().Add(t.timeout)
	if !t.started && !t.firstACKBy.After(deadline) {
		deadline = t.firstACKBy
		left := time.Until(deadline)
		if left <= 0 {
			return 0, errNoACK
		}
		if err := t.sock.setTimeout(left); err != nil {
			return 0, err
		}
		t.shortWait = true
	}
	for {
		if t.s.stopping.Load() {
			return 0, errShutdown
		}
		n, err := t.sock.read(buf)
		if errors.Is(err, errTimeout) && !t.started && !time.Now().Before(t.firstACKBy) {
			return 0, errNoACK
		}
		if err != nil {
			return 0, err
		}
		if t.s.stopping.Load() {
			return 0, errShutdown
		}
		if n >= 4 {
			switch binary.BigEndian.Uint16(buf) {
			case opACK:
				// Map the 16-bit block number onto the window [lo, hi].
				d := int64(binary.BigEndian.Uint16(buf[2:]) - uint16(lo))
				if d <= hi-lo {
					return lo + d, t.startedNow()
				}
			case opERROR:
				code, msg, _ := parseError(buf[:n])
				return 0, &clientError{code, msg}
			}
		}
		// A duplicate ACK or a stray packet. SO_RCVTIMEO restarts with each read, so keep
		// this wait's own deadline.
		if time.Now().After(deadline) {
			return 0, errTimeout
		}
	}
}
