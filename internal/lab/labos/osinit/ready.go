package osinit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// serveReady answers every connection on ln with line and closes it, until ctx is done (then it
// closes ln and returns nil) or ln fails. Connections are answered one at a time: a line fits
// in any socket buffer, so a write never waits for the peer, and the deadline bounds the odd
// one that does.
func serveReady(ctx context.Context, ln net.Listener, line string, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, net.ErrClosed) && isTemporary(err) {
				// EMFILE and friends: wait a little, as net/http's Server does.
				log.Warn("readiness listener: accept", "err", err)
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(line)); err != nil {
			log.Debug("readiness listener: write", "peer", c.RemoteAddr(), "err", err)
		}
		c.Close()
	}
}

// isTemporary is net/http's test for an accept error worth retrying (EMFILE, ECONNABORTED).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
