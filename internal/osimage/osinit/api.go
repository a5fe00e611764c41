package osinit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/osimage"
	"github.com/imaged/imaged/internal/version"
)

// ErrRefused is returned (wrapped) when imaged answers with a 4xx other than 408 or 429: asking
// again would not help.
var ErrRefused = errors.New("osinit: refused")

// maxResponse bounds how much of a response body is read.
const maxResponse = 1 << 20

// doer is the part of *http.Client that the os mode uses.
type doer interface {
	Do(*http.Request) (*http.Response, error)
}

// client calls imaged's API with the os mode's retries.
type client struct {
	http            doer
	attempt         time.Duration // one request
	backoff, maxOff time.Duration
	log             *slog.Logger
}

func newClient(cfg *Config, log *slog.Logger) *client {
	return &client{
		http: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // straight to imaged, whatever the environment says
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
		}},
		attempt: cfg.RequestTimeout, backoff: cfg.RetryBackoff, maxOff: cfg.RetryBackoffMax, log: log,
	}
}

// answer is a 2xx response.
type answer struct {
	Status   int
	Body     []byte
	Attempts int
}

// call sends the request until imaged answers 2xx (returned) or a 4xx other than 408 and 429
// (ErrRefused). Network errors, timeouts (each attempt is bounded by c.attempt), 408, 429 and
// 5xx are retried after c.backoff, doubling up to c.maxOff, plus up to 20% jitter so that a
// chassis of blades does not retry in lockstep; a Retry-After in seconds (429, 503) is waited
// instead, capped at c.maxOff. It gives up only when ctx is done.
func (c *client) call(ctx context.Context, method, url string, body []byte) (answer, error) {
	backoff := c.backoff
	var last error // the last failure that was not ctx's end cutting an attempt short
	giveUp := func(attempts int) error {
		return fmt.Errorf("osinit: %s %s: gave up after %d attempts (%w); last: %w", method, url, attempts, context.Cause(ctx), last)
	}
	for attempt := 1; ; attempt++ {
		status, resp, retryAfter, err := c.once(ctx, method, url, body)
		switch {
		case err == nil && status >= 200 && status < 300:
			return answer{Status: status, Body: resp, Attempts: attempt}, nil
		case err == nil && status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			return answer{}, fmt.Errorf("%w: %s %s answered %d %s: %s", ErrRefused, method, url, status, http.StatusText(status), snippet(resp))
		case err == nil:
			err = fmt.Errorf("%s %s answered %d %s: %s", method, url, status, http.StatusText(status), snippet(resp))
		}
		if ctx.Err() != nil {
			if last == nil {
				last = err
			}
			return answer{}, giveUp(attempt)
		}
		last = err
		wait := backoff + rand.N(backoff/5+1)
		if retryAfter > 0 {
			wait = min(retryAfter, c.maxOff)
		}
		c.log.Warn("request failed; retrying", "attempt", attempt, "err", err, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return answer{}, giveUp(attempt)
		case <-t.C:
		}
		backoff = min(2*backoff, c.maxOff)
	}
}

// once makes one request; err is set only when no status was received.
func (c *client) once(ctx context.Context, method, url string, body []byte) (status int, resp []byte, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.attempt)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "imaged-os/"+version.Version)
	r, err := c.http.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer r.Body.Close()
	resp, err = io.ReadAll(io.LimitReader(r.Body, maxResponse))
	if err != nil {
		// A 2xx whose body was cut off is not an answer to trust: try again.
		return 0, nil, 0, fmt.Errorf("read %d response: %w", r.StatusCode, err)
	}
	if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return r.StatusCode, resp, retryAfter, nil
}

// fetchMetadata GETs base/api/v1/metadata. The raw body is returned too, for the console.
func fetchMetadata(ctx context.Context, c *client, base *url.URL) (osimage.Metadata, []byte, error) {
	u := base.JoinPath(osimage.MetadataPath).String()
	a, err := c.call(ctx, http.MethodGet, u, nil)
	if err != nil {
		return osimage.Metadata{}, nil, err
	}
	var md osimage.Metadata
	if err := json.Unmarshal(a.Body, &md); err != nil {
		return osimage.Metadata{}, a.Body, fmt.Errorf("osinit: GET %s: the answer is not metadata JSON: %w: %s", u, err, snippet(a.Body))
	}
	return md, a.Body, nil
}

// checkIn POSTs the digest to base/api/v1/check-in until imaged takes it or refuses it.
func checkIn(ctx context.Context, c *client, base *url.URL, d images.Digest) (osimage.CheckInResponse, answer, error) {
	u := base.JoinPath(osimage.CheckInPath).String()
	body, err := json.Marshal(osimage.CheckInRequest{Digest: d.String()})
	if err != nil {
		return osimage.CheckInResponse{}, answer{}, err
	}
	a, err := c.call(ctx, http.MethodPost, u, body)
	if err != nil {
		return osimage.CheckInResponse{}, answer{}, err
	}
	var res osimage.CheckInResponse
	if err := json.Unmarshal(a.Body, &res); err != nil {
		// Taken all the same: a 2xx is imaged's word that it recorded the check-in.
		return osimage.CheckInResponse{}, a, fmt.Errorf("osinit: POST %s answered %d with a body that is not {\"stale\": bool}: %w: %s", u, a.Status, err, snippet(a.Body))
	}
	return res, a, nil
}

// snippet is the start of a response body for a message.
func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	if len(b) == 0 {
		return "(empty body)"
	}
	return string(b)
}
