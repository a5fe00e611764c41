package httplimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Class is how a route's deadlines are set.
type Class int

const (
	// Request is a JSON API call or a boot script: its body must arrive within ReadTimeout of
	// the handler's start, and its answer must be taken within WriteTimeout of its first byte.
	Request Class = iota
	// Transfer is a download that may last long (a multi-GB blob): no total bound, but each
	// write must move within TransferStall, so the deadline moves on while bytes flow.
	Transfer
	// Stream is a Server-Sent Events stream: no total bound, each write (heartbeats included)
	// must go out within WriteTimeout, and only MaxStreams (MaxStreamsPerClient from one
	// address) run at once.
	Stream
)

// chunk is how much of a Transfer one ReadFrom call may send (with sendfile) before the
// deadline moves on: 1 MiB must go out within TransferStall.
const chunk = 1 << 20

// Handler sets the deadlines of every request by the class that classify gives it, and caps the
// Streams. It must wrap the whole handler of a server whose listener Listen wrapped, or of any
// TCP server (the deadlines work on any connection).
func (l *Limiter) Handler(classify func(*http.Request) Class, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lw := &writer{ResponseWriter: w, rc: http.NewResponseController(w), l: l}
		class := classify(r)
		switch class {
		case Stream:
			addr := clientAddr(r.RemoteAddr)
			ok, client := l.strms.take(addr)
			if !ok {
				msg := fmt.Sprintf("too many event streams open (%d, the server's limit); close one and try again", l.cfg.MaxStreams)
				reason := ReasonStreams
				if client {
					msg = fmt.Sprintf("too many event streams open from %s (%d, the limit per client); close one and try again", addr, l.cfg.MaxStreamsPerClient)
					reason = ReasonClientStreams
				}
				l.refuse(reason)
				w.Header().Set("Retry-After", "10")
				writeError(w, http.StatusServiceUnavailable, msg)
				return
			}
			l.streams.Inc()
			defer func() {
				l.strms.release(addr)
				l.streams.Dec()
			}()
			lw.each = l.cfg.WriteTimeout
		case Transfer:
			lw.each = l.cfg.TransferStall
		default:
			lw.first = l.cfg.WriteTimeout
		}
		// A request without a body has nothing to trickle; one with a body gets ReadTimeout for
		// all of it. (net/http clears the read deadline itself once the body has been read, when
		// it starts watching the connection for the client going away.)
		if r.Body != nil && r.Body != http.NoBody {
			if err := lw.rc.SetReadDeadline(time.Now().Add(l.cfg.ReadTimeout)); err == nil {
				r.Body = &body{ReadCloser: r.Body, l: l}
			}
		}
		next.ServeHTTP(lw, r)
	})
}

// writeError answers in the API's error format.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// body counts a body cut by its read deadline. The error it returns is the connection's, so
// errors.Is(err, os.ErrDeadlineExceeded) tells a handler to answer 408.
type body struct {
	io.ReadCloser
	l        *Limiter
	timedOut bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.timedOut && errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut = true
		b.l.refuse(ReasonReadTimeout)
	}
	return n, err
}

// writer moves the connection's write deadline before the writes of its class and counts the
// first write that misses it.
type writer struct {
	http.ResponseWriter
	rc       *http.ResponseController // of the wrapped writer
	l        *Limiter
	each     time.Duration // Transfer, Stream: the deadline is this after the start of each write
	first    time.Duration // Request: the deadline is this after the first write
	armed    bool
	timedOut bool
}

func (w *writer) arm() {
	switch {
	case w.each > 0:
		w.rc.SetWriteDeadline(time.Now().Add(w.each))
	case !w.armed:
		w.rc.SetWriteDeadline(time.Now().Add(w.first))
	}
	w.armed = true
}

func (w *writer) check(err error) {
	if err != nil && !w.timedOut && errors.Is(err, os.ErrDeadlineExceeded) {
		w.timedOut = true
		w.l.refuse(ReasonWriteTimeout)
	}
}

func (w *writer) WriteHeader(code int) {
	w.arm()
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(b []byte) (int, error) {
	w.arm()
	n, err := w.ResponseWriter.Write(b)
	w.check(err)
	return n, err
}

// FlushError is what http.ResponseController.Flush calls: a Stream's events go out here.
func (w *writer) FlushError() error {
	w.arm()
	err := w.rc.Flush()
	w.check(err)
	return err
}

// Flush is http.Flusher's, for code that asks for one.
func (w *writer) Flush() { w.FlushError() }

// Unwrap lets http.ResponseController reach the connection (deadlines, hijacking).
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps net/http's sendfile path for file responses (http.ServeContent copies with
// it). A Transfer is sent chunk by chunk, the deadline moving on before each; a file behind an
// io.LimitedReader (ServeContent's ranges) stays a *os.File to the kernel, so each chunk still
// goes out with sendfile.
func (w *writer) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src) // each Write arms
	}
	if w.each == 0 {
		w.arm()
		n, err := rf.ReadFrom(src)
		w.check(err)
		return n, err
	}
	var total int64
	for {
		var part io.Reader
		want := int64(chunk)
		lr, limited := src.(*io.LimitedReader)
		if limited {
			want = min(want, lr.N)
			if want <= 0 {
				return total, nil
			}
			part = &io.LimitedReader{R: lr.R, N: want}
		} else {
			part = io.LimitReader(src, want)
		}
		w.arm()
		n, err := rf.ReadFrom(part)
		total += n
		if limited {
			lr.N -= n
		}
		if err != nil {
			w.check(err)
			return total, err
		}
		if n < want { // the source ended
			return total, nil
		}
	}
}
