package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ControlClient speaks the API over a running daemon's control socket (root or imaged's user:
// the admin scope): how the CLI and the lab read and change a daemon's state.
type ControlClient struct {
	Path string       // the socket
	By   string       // the operator, sent as OperatorHeader
	HTTP *http.Client // dials Path whatever the URL's host
}

// NewControlClient returns a client of the control socket at path.
func NewControlClient(path, by string) *ControlClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	// Changes are small; a verify or a prune of many blobs is the slowest thing asked of it.
	return &ControlClient{Path: path, By: by, HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// ResponseError is an error the daemon answered with.
type ResponseError struct {
	Status int
	Body   Error
}

func (e *ResponseError) Error() string {
	if e.Body.Field != "" {
		return fmt.Sprintf("imaged: %s (field %s; HTTP %d)", e.Body.Error, e.Body.Field, e.Status)
	}
	return fmt.Sprintf("imaged: %s (HTTP %d)", e.Body.Error, e.Status)
}

// Do sends body (if not nil) as JSON and decodes a 2xx reply into out (if not nil); another
// status is a *ResponseError.
func (c *ControlClient) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://imaged"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.By != "" {
		req.Header.Set(OperatorHeader, c.By)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("imaged's control socket %s did not answer (is imaged running?): %w", c.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &ResponseError{Status: resp.StatusCode}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e.Body); err != nil || e.Body.Error == "" {
			e.Body.Error = resp.Status
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("imaged %s %s: reply: %w", method, path, err)
	}
	return nil
}
