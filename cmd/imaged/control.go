package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/imaged/imaged/internal/api"
)

// controlClient speaks imaged's API over the running daemon's control socket: how the CLI reads
// and changes the catalog while the daemon holds the state file.
type controlClient struct {
	path   string
	by     string // the operator, sent as api.OperatorHeader
	client *http.Client
}

func newControlClient(path, by string) *controlClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	// Changes are small; a verify or a prune of many blobs is the slowest thing asked of it.
	return &controlClient{path: path, by: by, client: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// apiError is an error the daemon answered with.
type apiError struct {
	Status int
	Body   api.Error
}

func (e *apiError) Error() string {
	if e.Body.Field != "" {
		return fmt.Sprintf("imaged: %s (field %s; HTTP %d)", e.Body.Error, e.Body.Field, e.Status)
	}
	return fmt.Sprintf("imaged: %s (HTTP %d)", e.Body.Error, e.Status)
}

// do sends body (if not nil) as JSON and decodes a 2xx reply into out (if not nil).
func (c *controlClient) do(ctx context.Context, method, path string, body, out any) error {
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
	req.Header.Set(api.OperatorHeader, c.by)
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("the state file is in use and imaged's control socket %s did not answer: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &apiError{Status: resp.StatusCode}
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
