package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/imaged/imaged/internal/agentapi"
)

// HelloPath is the agent API endpoint, relative to Config.Server.
const HelloPath = agentapi.HelloPath

// HelloRequest is the JSON body of POST /agent/v1/hello.
type HelloRequest = agentapi.HelloRequest

// ErrRefused is returned (wrapped) when the server answers hello with a 4xx status other than
// 408 or 429: it refused the token or does not know the machine, and asking again will not help.
var ErrRefused = errors.New("agent: hello refused")

// maxHelloResponse bounds how much of a response body the agent reads.
const maxHelloResponse = 1 << 20

// doer is the part of *http.Client that hello uses.
type doer interface {
	Do(*http.Request) (*http.Response, error)
}

// helloResult is a 2xx answer to hello.
type helloResult struct {
	Status   int
	Body     []byte // as received; JSON is expected but not required yet
	Attempts int
}

// sendHello POSTs the body that mkBody returns (made anew for each attempt, so the uptime is
// fresh) until a 2xx answer. Each attempt is bounded by cfg.HelloAttempt; between attempts the
// wait starts at cfg.HelloBackoff and doubles up to cfg.HelloBackoffMax, plus up to 20% jitter
// so that a chassis of blades does not retry in lockstep; a 429 or 503 with Retry-After (in
// seconds) waits that long instead, capped at cfg.HelloBackoffMax. Network errors, timeouts,
// 408, 429 and 5xx are retried until cfg.HelloTimeout has passed; any other 4xx is ErrRefused.
func sendHello(ctx context.Context, c doer, url string, mkBody func() HelloRequest, cfg *Config, log *slog.Logger) (helloResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.HelloTimeout)
	defer cancel()
	backoff := cfg.HelloBackoff
	for attempt := 1; ; attempt++ {
		status, body, retryAfter, err := helloOnce(ctx, c, url, mkBody(), cfg.HelloAttempt)
		switch {
		case err == nil && status >= 200 && status < 300:
			return helloResult{Status: status, Body: body, Attempts: attempt}, nil
		case err == nil && status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			return helloResult{}, fmt.Errorf("%w: %s answered %d %s: %s", ErrRefused, url, status, http.StatusText(status), snippet(body))
		case err == nil:
			err = fmt.Errorf("%s answered %d %s: %s", url, status, http.StatusText(status), snippet(body))
		}
		if ctx.Err() != nil {
			return helloResult{}, giveUp(ctx, cfg, attempt, err)
		}
		wait := backoff + rand.N(backoff/5+1)
		if retryAfter > 0 {
			wait = min(retryAfter, cfg.HelloBackoffMax)
		}
		log.Warn("hello attempt failed; retrying", "attempt", attempt, "err", err, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return helloResult{}, giveUp(ctx, cfg, attempt, err)
		case <-t.C:
		}
		backoff = min(2*backoff, cfg.HelloBackoffMax)
	}
}

func giveUp(ctx context.Context, cfg *Config, attempts int, last error) error {
	why := fmt.Sprintf("no success within %v", cfg.HelloTimeout)
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why = "cancelled"
	}
	return fmt.Errorf("agent: hello: %s after %d attempts; last: %w", why, attempts, last)
}

// helloOnce makes one request; err is set only when no status was received.
func helloOnce(ctx context.Context, c doer, url string, body HelloRequest, timeout time.Duration) (status int, respBody []byte, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "imaged-agent/"+body.AgentVersion)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	respBody, err = io.ReadAll(io.LimitReader(resp.Body, maxHelloResponse))
	if err != nil {
		// A 2xx whose body was cut off is not an answer we can trust: try again.
		return 0, nil, 0, fmt.Errorf("read %d response: %w", resp.StatusCode, err)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, respBody, retryAfter, nil
}

// snippet is the start of a response body for an error message.
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
