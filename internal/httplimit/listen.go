package httplimit

import (
	"io"
	"net"
	"net/netip"
	"sync"
)

// Listen wraps ln so that at most MaxConns connections are open at once over every listener
// this Limiter wraps, and at most MaxConnsPerClient from one client address. A connection over
// the limit is closed as soon as it is accepted and counted (connections or
// client_connections). Accepting and closing, rather than leaving it in the kernel's backlog,
// keeps the backlog moving for everyone else: a flood from one address does not delay another's
// connection.
func (l *Limiter) Listen(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := clientAddr(c.RemoteAddr().String())
		ok, client := ln.l.conns.take(addr)
		if !ok {
			if client {
				ln.l.refuse(ReasonClientConnections)
			} else {
				ln.l.refuse(ReasonConnections)
			}
			c.Close()
			continue
		}
		ln.l.connections.Inc()
		return &conn{Conn: c, l: ln.l, addr: addr}, nil
	}
}

// conn gives its slot back when it is closed (by net/http, by a hijacker, or by TLS over it).
type conn struct {
	net.Conn
	l    *Limiter
	addr netip.Addr
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.conns.release(c.addr)
		c.l.connections.Dec()
	})
	return err
}

// ReadFrom keeps the kernel's sendfile path: net/http copies a file response with the
// connection's ReadFrom, which only a *net.TCPConn has.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
