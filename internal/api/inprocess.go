package api

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
)

// NewHandlerClient returns a client whose every request h serves in this process, as p: the
// CLI's API when no daemon runs (the daemon's own handlers, over the state file the CLI opened,
// with the operator as p as the control socket would make them). by names the operator, as for
// NewControlClient.
func NewHandlerClient(h http.Handler, p Principal, by string) *Client {
	return &Client{http: &http.Client{Transport: handlerTransport{h: h, p: p}}, base: &url.URL{Scheme: "http", Host: "imaged"}, by: by,
		where: "imaged's API in this process"}
}

// handlerTransport is an http.RoundTripper that serves each request with its handler, in this
// process, the request's context carrying the Principal (as the control socket's ConnContext
// gives it). The reply streams: the handler writes into a pipe that the response's body reads.
type handlerTransport struct {
	h http.Handler
	p Principal
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(WithPrincipal(req.Context(), t.p))
	r.RequestURI = req.URL.RequestURI()
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{req: req, header: http.Header{}, r: pr, w: pw, head: make(chan headOrError, 1)}
	go func() {
		defer func() {
			r.Body.Close()
			if v := recover(); v != nil {
				err := fmt.Errorf("api: %s %s: the handler panicked: %v", req.Method, req.URL.Path, v)
				w.once.Do(func() { w.head <- headOrError{err: err} })
				pw.CloseWithError(err)
				return
			}
			w.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
			pw.Close()
		}()
		t.h.ServeHTTP(w, r)
	}()
	select {
	case h := <-w.head:
		if h.err != nil {
			return nil, h.err
		}
		return h.resp, nil
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err()) // the handler's writes fail; its context is done too
		return nil, req.Context().Err()
	}
}

type headOrError struct {
	resp *http.Response
	err  error
}

// pipeWriter is the handler's http.ResponseWriter: the status and header go to RoundTrip once,
// the body into the pipe.
type pipeWriter struct {
	req    *http.Request
	header http.Header
	r      *io.PipeReader // the response's body
	w      *io.PipeWriter
	once   sync.Once
	head   chan headOrError
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.head <- headOrError{resp: &http.Response{Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), StatusCode: code,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: w.header.Clone(), Body: w.r, ContentLength: -1, Request: w.req}}
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.w.Write(b)
}

// Flush does nothing: every write is already in the reader's hands (the SSE stream flushes).
func (w *pipeWriter) Flush() {}
