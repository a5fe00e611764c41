package redfish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imaged/imaged/internal/power"
)

const (
	maxBody      = 8 << 20 // the largest answer read; a 45-system collection is a few KiB
	maxRedirects = 3
	maxMessage   = 256 // BMC message text kept in an error
)

// request is one Redfish request. path is a path on the BMC ("/redfish/v1/Systems/1/") or a
// URL the BMC gave (a Location header), of which only the path is used.
type request struct {
	method  string
	path    string
	body    []byte
	ifMatch string // sent on PATCH only
}

// response is a BMC's complete answer.
type response struct {
	status int
	header http.Header
	body   []byte
	path   string // the path that answered, after redirects
}

// httpError describes a non-success answer, with the BMC's first message.
func (r *response) httpError(method string) *power.HTTPError {
	e := &power.HTTPError{Method: method, Path: r.path, Status: r.status}
	var eb errorBody
	if json.Unmarshal(r.body, &eb) == nil {
		e.MessageID, e.Message = eb.first()
		e.MessageID, e.Message = clip(e.MessageID), clip(e.Message)
	}
	return e
}

func clip(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	s = s[:maxMessage]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// call runs one Redfish operation: the circuit breaker, the session (logging in again once on
// 401), retries, and the answer checked. A success is decoded into out when out is not nil.
func (c *Client) call(ctx context.Context, r request, out any) (*response, error) {
	return c.op(func() (*response, error) { return c.callAuthed(ctx, r, out) })
}

// op runs one operation under the circuit breaker and counts it.
func (c *Client) op(f func() (*response, error)) (*response, error) {
	probe, err := c.br.allow()
	if err != nil {
		c.m.request(OutcomeDegraded, 0)
		return nil, err
	}
	start := time.Now()
	resp, err := f()
	c.m.request(outcomeOf(err), time.Since(start).Seconds())
	if changed, h := c.br.done(probe, err); changed {
		c.healthChanged(h)
	}
	return resp, err
}

func (c *Client) callAuthed(ctx context.Context, r request, out any) (*response, error) {
	a, q, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.exchange(ctx, r, a)
	if err == nil && resp.status == http.StatusUnauthorized && !a.basic {
		// The session expired, was deleted from the BMC's small session table, or the BMC
		// rebooted and forgot it: log in again, once.
		if a, err = c.relogin(ctx, a); err != nil {
			return nil, err
		}
		resp, err = c.exchange(ctx, r, a)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case resp.status >= 200 && resp.status < 300:
		// Success, whatever the body says: iLO wraps successes in an error envelope
		// ({"error":{"@Message.ExtendedInfo":[{"MessageId":"Base.1.4.Success"}]}}) with 200.
	case resp.status == http.StatusBadRequest && q.SuccessIn400 && successEnvelope(resp.body):
		// Quirks.SuccessIn400: some iLO 4 and Moonshot firmware send that envelope with 400.
		c.log.Debug("400 carrying only Success messages taken as success (quirk)", "path", resp.path)
		return resp, nil
	default:
		return resp, resp.httpError(r.method)
	}
	if out != nil && resp.status != http.StatusNoContent {
		if err := decode(resp.body, out); err != nil {
			return resp, fmt.Errorf("%s %s: %w", r.method, resp.path, err)
		}
	}
	return resp, nil
}

func successEnvelope(b []byte) bool {
	var eb errorBody
	return json.Unmarshal(b, &eb) == nil && eb.allSuccess()
}

// healthChanged publishes a breaker transition: metric, log and the caller's callback.
func (c *Client) healthChanged(h power.Health) {
	c.m.setDegraded(h.Degraded)
	if h.Degraded {
		c.log.Warn("BMC degraded: calls fail fast until the cooldown has passed",
			"failures", h.Failures, "last_error", h.LastError, "cooldown", c.cfg.BreakerCooldown)
	} else {
		c.log.Info("BMC healthy again")
	}
	if c.cfg.OnHealthChange != nil {
		c.cfg.OnHealthChange(h)
	}
}

// exchange sends r with retries: transport errors and 5xx are tried again after a backoff with
// full jitter, or the Retry-After the BMC asked for (capped), Config.Retries times at most.
// Every answer below 500 is returned as it is, for the caller to judge; 4xx are never retried.
func (c *Client) exchange(ctx context.Context, r request, a auth) (*response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.attempt(ctx, r, a)
		if err == nil && resp.status < 500 {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", r.method, r.path, ctx.Err())
		}
		last := err
		if err == nil {
			last = resp.httpError(r.method)
		}
		if attempt > 0 {
			last = fmt.Errorf("%w (attempt %d of %d)", last, attempt+1, c.cfg.Retries+1)
		}
		if attempt >= c.cfg.Retries || !retryable(r.method, resp, err) {
			return nil, last
		}
		wait := c.backoff(attempt)
		if resp != nil {
			if ra, ok := retryAfter(resp.header.Get("Retry-After"), time.Now()); ok {
				wait = min(ra, c.cfg.RetryAfterMax) // RFC 9110 §10.2.3, capped
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, fmt.Errorf("%w; no time left to retry in %s", last, wait)
		}
		c.log.Debug("retrying BMC request", "method", r.method, "path", r.path, "attempt", attempt+2, "wait", wait, "err", last)
		c.m.retry()
		if err := sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
		}
	}
}

// retryable: a transport error or 5xx is tried again, except that
//   - a refused certificate stays refused;
//   - a POST (a login, a reset) is repeated only when it surely did not reach the BMC (the
//     connection was never made) or the BMC said 503, "not processed, come back": repeating a
//     login that timed out fills the BMC's session table, repeating a reset may reset twice.
func retryable(method string, resp *response, err error) bool {
	if err != nil {
		if !errors.Is(err, power.ErrUnreachable) || isTLSVerifyError(err) {
			return false
		}
		return method != http.MethodPost || isDialError(err)
	}
	return method != http.MethodPost || resp.status == http.StatusServiceUnavailable
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// backoff is the wait before retry attempt+1: full jitter over an exponential cap.
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.cfg.BackoffMax
	if attempt < 30 {
		ceil = min(ceil, c.cfg.BackoffBase<<attempt)
	}
	return c.jitter(ceil)
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt sends r once, following 307/308 redirects.
func (c *Client) attempt(ctx context.Context, r request, a auth) (*response, error) {
	u, err := c.resolve(r.path)
	if err != nil {
		return nil, err
	}
	for hop := 0; ; hop++ {
		resp, err := c.roundTrip(ctx, r, a, u)
		if err != nil {
			return nil, err
		}
		loc := resp.header.Get("Location")
		// iLO 5 before 1.40 answers 308 to a URI without a trailing slash. 307 and 308
		// promise that the same method and body work at Location (RFC 9110 §15.4.8-9), so
		// they are followed with both, on this BMC only, a few times at most.
		if (resp.status == http.StatusTemporaryRedirect || resp.status == http.StatusPermanentRedirect) &&
			loc != "" && hop < maxRedirects {
			ref, err := url.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w: bad redirect Location", r.method, u.Path, power.ErrMalformed)
			}
			u = c.onBMC(u.ResolveReference(ref))
			c.log.Debug("following redirect", "status", resp.status, "to", u.Path)
			continue
		}
		return resp, nil
	}
}

// resolve turns a path from us or a link from the BMC into a URL on this BMC.
func (c *Client) resolve(p string) (*url.URL, error) {
	ref, err := url.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("%w: bad resource path: %w", power.ErrMalformed, err)
	}
	u := c.onBMC(c.base.ResolveReference(ref))
	c.mu.Lock()
	slash := c.quirks.TrailingSlash
	c.mu.Unlock()
	if slash && !strings.HasSuffix(u.Path, "/") {
		u.Path += "/" // Quirks.TrailingSlash: iLO 5 < 1.40 would answer 308
		u.RawPath = ""
	}
	return u, nil
}

// onBMC keeps only the path and query of u. A BMC's idea of its own address (in Location
// headers and links) is wrong behind NAT or a port forward, and credentials go to no one else.
func (c *Client) onBMC(u *url.URL) *url.URL {
	return &url.URL{Scheme: c.base.Scheme, Host: c.base.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
}

// roundTrip sends one HTTP request within Config.Timeout and reads the whole answer.
func (c *Client) roundTrip(ctx context.Context, r request, a auth, u *url.URL) (*response, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s %s: %w", r.method, u.Path, ctx.Err())
	}
	defer func() { <-c.sem }()
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	req.Header.Set("User-Agent", "imaged")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.ifMatch != "" && r.method == http.MethodPatch {
		// Only on PATCH: some BMCs refuse If-Match on POST actions (400), and an action's
		// target has no ETag of its own to match.
		req.Header.Set("If-Match", r.ifMatch)
	}
	switch {
	case a.token != "":
		req.Header.Set("X-Auth-Token", a.token)
	case a.basic:
		req.SetBasicAuth(c.cfg.Username, c.cfg.Password)
	}

	start := time.Now()
	hr, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, actx, r.method, u.Path, err)
	}
	defer hr.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hr.Body, maxBody+1))
	if err != nil {
		return nil, c.transportError(ctx, actx, r.method, u.Path, err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%s %s: %w: answer larger than %d bytes", r.method, u.Path, power.ErrMalformed, maxBody)
	}
	c.log.Debug("BMC request", "method", r.method, "path", u.Path, "status", hr.StatusCode, "took", time.Since(start))
	return &response{status: hr.StatusCode, header: hr.Header, body: b, path: u.Path}, nil
}

// transportError names why no answer came: the caller gave up (not the BMC's fault), the
// per-request timeout passed, or the connection failed.
func (c *Client) transportError(ctx, actx context.Context, method, path string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
	case actx.Err() != nil:
		return fmt.Errorf("%s %s: %w: %w: no answer within %s", method, path, power.ErrUnreachable, power.ErrTimeout, c.cfg.Timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text repeats the URL
	}
	return fmt.Errorf("%s %s: %w: %w", method, path, power.ErrUnreachable, err)
}
