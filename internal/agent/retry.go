package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// ErrRefused is returned (wrapped) when imaged answers with a 4xx other than 408 or 429: it
// refused the request (a token, an unknown machine), and asking again will not help.
var ErrRefused = errors.New("refused by imaged")

// maxResponse bounds how much of a response body is read.
const maxResponse = 1 << 20

// Doer is the part of *http.Client that Retry uses.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Answer is a 2xx response.
type Answer struct {
	Status   int
	Body     []byte // as received
	Attempts int
}

// Retry sends requests to imaged from a blade (the agent's hello, the booted OS's metadata and
// check-in) with the rules a chassis of blades needs: each attempt bounded by Attempt; network
// errors, timeouts, 408, 429 and 5xx retried after Backoff, doubling up to MaxBackoff, plus up
// to 20 % jitter so that blades do not retry in lockstep; a Retry-After in seconds (429, 503)
// waited instead, capped at MaxBackoff; any other 4xx is final (ErrRefused). It gives up only
// when ctx ends.
type Retry struct {
	HTTP                Doer
	Attempt             time.Duration
	Backoff, MaxBackoff time.Duration
	Log                 *slog.Logger
}

// Do sends the request that newReq makes (anew for each attempt, so a body can be fresh) until
// a 2xx answer or a final refusal.
func (r Retry) Do(ctx context.Context, what string, newReq func(ctx context.Context) (*http.Request, error)) (Answer, error) {
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	backoff := r.Backoff
	var last error // the last failure that was not ctx's end cutting an attempt short
	giveUp := func(attempts int) error {
		return fmt.Errorf("%s: gave up after %d attempts (%w); last: %w", what, attempts, context.Cause(ctx), last)
	}
	for attempt := 1; ; attempt++ {
		status, body, retryAfter, err := r.once(ctx, newReq)
		switch {
		case err == nil && status >= 200 && status < 300:
			return Answer{Status: status, Body: body, Attempts: attempt}, nil
		case err == nil && status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			return Answer{}, fmt.Errorf("%w: %s answered %d %s: %s", ErrRefused, what, status, http.StatusText(status), snippet(body))
		case err == nil:
			err = fmt.Errorf("%s answered %d %s: %s", what, status, http.StatusText(status), snippet(body))
		}
		if ctx.Err() != nil {
			if last == nil {
				last = err
			}
			return Answer{}, giveUp(attempt)
		}
		last = err
		wait := backoff + rand.N(backoff/5+1)
		if retryAfter > 0 {
			wait = min(retryAfter, r.MaxBackoff)
		}
		r.Log.Warn("request failed; retrying", "what", what, "attempt", attempt, "err", err, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Answer{}, giveUp(attempt)
		case <-t.C:
		}
		backoff = min(2*backoff, r.MaxBackoff)
	}
}

// once makes one request; err is set only when no status was received.
func (r Retry) once(ctx context.Context, newReq func(context.Context) (*http.Request, error)) (status int, body []byte, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.Attempt)
	defer cancel()
	req, err := newReq(ctx)
	if err != nil {
		return 0, nil, 0, err
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		// A 2xx whose body was cut off is not an answer to trust: try again.
		return 0, nil, 0, fmt.Errorf("read %d response: %w", resp.StatusCode, err)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, body, retryAfter, nil
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

// Snippet is snippet for the packages that share Retry.
func Snippet(b []byte) string { return snippet(b) }
