package osinit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos"
	"github.com/imaged/imaged/internal/version"
)

// ErrRefused is returned (wrapped) when imaged answers with a 4xx other than 408 or 429: asking
// again would not help.
var ErrRefused = agent.ErrRefused

// client calls imaged's API with the blades' retry rules (agent.Retry): it gives up only when
// its context ends.
type client struct {
	retry agent.Retry
}

// answer is a 2xx response.
type answer = agent.Answer

func newClient(cfg *Config, log *slog.Logger) *client {
	return &client{retry: agent.Retry{
		HTTP: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // straight to imaged, whatever the environment says
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
		}},
		Attempt: cfg.RequestTimeout, Backoff: cfg.RetryBackoff, MaxBackoff: cfg.RetryBackoffMax, Log: log,
	}}
}

// call sends the request until imaged answers 2xx or refuses it (ErrRefused).
func (c *client) call(ctx context.Context, method, url string, body []byte) (answer, error) {
	return c.retry.Do(ctx, "osinit: "+method+" "+url, func(ctx context.Context) (*http.Request, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, rd)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "imaged-os/"+version.Version)
		return req, nil
	})
}

// fetchMetadata GETs base/api/v1/metadata. The raw body is returned too, for the console.
func fetchMetadata(ctx context.Context, c *client, base *url.URL) (labos.Metadata, []byte, error) {
	u := base.JoinPath(labos.MetadataPath).String()
	a, err := c.call(ctx, http.MethodGet, u, nil)
	if err != nil {
		return labos.Metadata{}, nil, err
	}
	var md labos.Metadata
	if err := json.Unmarshal(a.Body, &md); err != nil {
		return labos.Metadata{}, a.Body, fmt.Errorf("osinit: GET %s: the answer is not metadata JSON: %w: %s", u, err, snippet(a.Body))
	}
	return md, a.Body, nil
}

// checkIn POSTs the digest to base/api/v1/check-in until imaged takes it or refuses it.
func checkIn(ctx context.Context, c *client, base *url.URL, d images.Digest) (labos.CheckInResponse, answer, error) {
	u := base.JoinPath(labos.CheckInPath).String()
	body, err := json.Marshal(labos.CheckInRequest{Digest: d.String()})
	if err != nil {
		return labos.CheckInResponse{}, answer{}, err
	}
	a, err := c.call(ctx, http.MethodPost, u, body)
	if err != nil {
		return labos.CheckInResponse{}, answer{}, err
	}
	var res labos.CheckInResponse
	if err := json.Unmarshal(a.Body, &res); err != nil {
		// Taken all the same: a 2xx is imaged's word that it recorded the check-in.
		return labos.CheckInResponse{}, a, fmt.Errorf("osinit: POST %s answered %d with a body that is not {\"stale\": bool}: %w: %s", u, a.Status, err, snippet(a.Body))
	}
	return res, a, nil
}

func snippet(b []byte) string { return agent.Snippet(b) }
