package redfish

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imaged/imaged/internal/power"
)

// TestUnreachableClosedPort: a BMC whose port is closed (a real socket) is ErrUnreachable in
// bounded time.
func TestUnreachableClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig()
	cfg.Endpoint = &url.URL{Scheme: "https", Host: addr}
	cfg.Retries = 3
	cfg.BackoffBase = time.Millisecond
	cfg.Timeout = 2 * time.Second
	c, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Systems(t.Context())
	if !errors.Is(err, power.ErrUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Systems = %v, want ErrUnreachable from connection refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to give up on a closed port", d)
	}
	t.Log(err)
}

// dialRefused counts attempts and refuses them as a closed port does.
func dialRefused(n *atomic.Int32) http.RoundTripper {
	return roundTripFunc(func(*http.Request) (*http.Response, error) {
		n.Add(1)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	})
}

// TestRetryBackoff: a refused connection is tried Retries+1 times, waiting the full-jitter
// backoff between tries (jitter pinned to its upper bound: 0.5s, 1s, 2s, 4s, then capped).
func TestRetryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		cfg := testConfig()
		cfg.Retries = 5
		cfg.BackoffMax = 3 * time.Second
		c := testClient(t, cfg, dialRefused(&n))
		start := time.Now()
		_, err := c.Systems(t.Context())
		if !errors.Is(err, power.ErrUnreachable) {
			t.Fatalf("Systems = %v, want ErrUnreachable", err)
		}
		if n.Load() != 6 {
			t.Errorf("%d attempts, want 6", n.Load())
		}
		if got, want := time.Since(start), (500*time.Millisecond + time.Second + 2*time.Second + 3*time.Second + 3*time.Second); got != want {
			t.Errorf("retries took %s, want %s", got, want)
		}
	})
	// The jitter really is in [0, cap].
	c := testClient(t, testConfig(), nil)
	c.jitter = func(max time.Duration) time.Duration { return newClient(c.cfg, nil, nil, nil).jitter(max) }
	for i := range 200 {
		if d := c.backoff(i % 8); d < 0 || d > min(c.cfg.BackoffMax, c.cfg.BackoffBase<<(i%8)) {
			t.Fatalf("backoff(%d) = %s out of [0, cap]", i%8, d)
		}
	}
}

// TestBadPassword: a refused login is ErrAuth after exactly one login request (no retry storm
// that would lock the account); repeated calls stop at the breaker.
func TestBadPassword(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		f.password = "another"
		cfg := testConfig()
		cfg.BreakerThreshold = 3
		c := testClient(t, cfg, memTransport{f})
		for i := range 3 {
			_, err := c.Systems(t.Context())
			var he *power.HTTPError
			if !errors.Is(err, power.ErrAuth) || !errors.As(err, &he) || he.Status != 401 {
				t.Fatalf("call %d = %v, want ErrAuth with the 401", i, err)
			}
			if n := f.count("login"); n != i+1 {
				t.Fatalf("after call %d: %d logins, want %d", i, n, i+1)
			}
		}
		if _, err := c.Systems(t.Context()); !errors.Is(err, power.ErrDegraded) {
			t.Errorf("4th call = %v, want ErrDegraded", err)
		}
		if n := f.count("login"); n != 3 {
			t.Errorf("%d logins; the open breaker should have stopped the 4th", n)
		}
	})
}

// TestRelogin: a session the BMC forgot is replaced once, transparently; if the new login is
// refused too, the call fails with ErrAuth after exactly one re-login.
func TestRelogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if _, err := c.System(t.Context(), "1"); err != nil {
			t.Fatal(err)
		}
		f.expireSessions()
		if _, err := c.System(t.Context(), "1"); err != nil {
			t.Fatalf("after the session expired: %v", err)
		}
		if n := f.count("login"); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
		f.expireSessions()
		f.password = "changed"
		_, err := c.System(t.Context(), "1")
		if !errors.Is(err, power.ErrAuth) {
			t.Errorf("re-login refused = %v, want ErrAuth", err)
		}
		if n := f.count("login"); n != 3 {
			t.Errorf("%d logins, want 3 (one re-login only)", n)
		}
	})
}

// TestLoginFallback: a BMC that refuses to create sessions (404/405) is spoken to with basic
// auth, which it accepts.
func TestLoginFallback(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		synctest.Test(t, func(t *testing.T) {
			r := ilo5v272Rules
			r.loginStatus = status
			f := newFake(t, "ilo5-2.72.json", r)
			c := testClient(t, testConfig(), memTransport{f})
			if _, err := c.Systems(t.Context()); err != nil {
				t.Fatalf("login %d: %v", status, err)
			}
			if f.count("login") != 1 || f.count("401") != 0 {
				t.Errorf("login %d: %d logins and %d refusals", status, f.count("login"), f.count("401"))
			}
		})
	}
}

// TestRetryAfter: 503 with Retry-After in seconds or as an HTTP-date is waited out exactly (no
// jitter on top), capped at RetryAfterMax; a persistent 503 is ErrUnavailable after Retries+1
// requests; a Retry-After beyond the caller's deadline ends the call at once.
func TestRetryAfter(t *testing.T) {
	busy := func(f *fakeBMC, times int, retryAfter func() string) {
		n := 0
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/redfish/v1/Systems/" || n >= times {
				return false
			}
			n++
			w.Header().Set("Retry-After", retryAfter())
			f.fail(w, http.StatusServiceUnavailable, "Base.1.4.ServiceTemporarilyUnavailable", "")
			return true
		}
	}
	for _, tc := range []struct {
		name  string
		after func() string
		times int
		want  time.Duration
	}{
		{"seconds", func() string { return "7" }, 2, 14 * time.Second},
		{"date", func() string { return time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat) }, 1, 5 * time.Second},
		{"capped", func() string { return "3600" }, 1, 20 * time.Second},
		{"past date", func() string { return "Sat, 01 Jan 1994 00:00:00 GMT" }, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
				busy(f, tc.times, tc.after)
				cfg := testConfig()
				cfg.RetryAfterMax = 20 * time.Second
				c := testClient(t, cfg, memTransport{f})
				if _, _, err := c.session(t.Context()); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if _, err := c.Systems(t.Context()); err != nil {
					t.Fatal(err)
				}
				if got := time.Since(start); got != tc.want {
					t.Errorf("waited %s, want %s", got, tc.want)
				}
			})
		})
	}
	t.Run("persistent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
			busy(f, 1<<30, func() string { return "1" })
			cfg := testConfig()
			cfg.Retries = 3
			c := testClient(t, cfg, memTransport{f})
			_, err := c.Systems(t.Context())
			var he *power.HTTPError
			if !errors.Is(err, power.ErrUnavailable) || !errors.As(err, &he) || he.MessageID != "Base.1.4.ServiceTemporarilyUnavailable" {
				t.Fatalf("Systems = %v, want ErrUnavailable with the BMC's message", err)
			}
			n := 0
			for _, r := range f.requests() {
				if r == "GET /redfish/v1/Systems/ hooked" {
					n++
				}
			}
			if n != 4 {
				t.Errorf("%d requests, want 4", n)
			}
		})
	})
	t.Run("beyond deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
			busy(f, 1, func() string { return "30" })
			c := testClient(t, testConfig(), memTransport{f})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := c.Systems(ctx)
			if !errors.Is(err, power.ErrUnavailable) {
				t.Errorf("Systems = %v, want the 503", err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("waited %s for a retry that could not happen in time", d)
			}
		})
	})
}

// TestNoRetryOn4xx: a 4xx answer is final: one request.
func TestNoRetryOn4xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		c := testClient(t, testConfig(), memTransport{f})
		_, err := c.call(t.Context(), request{method: http.MethodGet, path: "/redfish/v1/Nope/"}, nil)
		if !errors.Is(err, power.ErrNotFound) {
			t.Fatalf("GET of a missing resource = %v, want ErrNotFound", err)
		}
		if n := f.count("GET /redfish/v1/Nope/"); n != 1 {
			t.Errorf("%d requests for a 404, want 1", n)
		}
		_, err = c.call(t.Context(), request{method: http.MethodPost, path: "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset/", body: []byte(`{"ResetType":"Explode"}`)}, nil)
		if err == nil {
			t.Fatal("a bad reset type was accepted")
		}
		if n := f.count("POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset/"); n != 1 {
			t.Errorf("%d requests for a 400, want 1", n)
		}
	})
}

// TestSlowBMC: an answer slower than Timeout is ErrTimeout (and ErrUnreachable) after
// Retries+1 tries of Timeout each, plus the backoffs; a POST is not repeated after a timeout (it
// may have been carried out).
func TestSlowBMC(t *testing.T) {
	slow := func(f *fakeBMC, method string, n *atomic.Int32) {
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != method || r.URL.Path == "/redfish/v1/" || r.URL.Path == "/redfish/v1/SessionService/Sessions/" {
				return false
			}
			n.Add(1)
			select {
			case <-time.After(time.Hour):
			case <-r.Context().Done():
			}
			return true
		}
	}
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		var n atomic.Int32
		slow(f, http.MethodGet, &n)
		cfg := testConfig()
		cfg.Retries = 2
		cfg.Timeout = 5 * time.Second
		c := testClient(t, cfg, memTransport{f})
		start := time.Now()
		_, err := c.Systems(t.Context())
		if !errors.Is(err, power.ErrTimeout) || !errors.Is(err, power.ErrUnreachable) {
			t.Fatalf("Systems = %v, want ErrTimeout and ErrUnreachable", err)
		}
		if n.Load() != 3 {
			t.Errorf("%d tries, want 3", n.Load())
		}
		if got, want := time.Since(start), 3*5*time.Second+500*time.Millisecond+time.Second; got != want {
			t.Errorf("gave up after %s, want %s", got, want)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		var n atomic.Int32
		slow(f, http.MethodPost, &n)
		c := testClient(t, testConfig(), memTransport{f})
		err := c.Power(t.Context(), "1", power.ActionOff)
		if !errors.Is(err, power.ErrTimeout) {
			t.Fatalf("Power = %v, want ErrTimeout", err)
		}
		if n.Load() != 1 {
			t.Errorf("a reset was sent %d times after timing out", n.Load())
		}
	})
}

// TestMalformed: JSON that does not parse is ErrMalformed, at once (not retried).
func TestMalformed(t *testing.T) {
	for _, body := range []string{`{"Id": "1", "PowerState": `, `<html>502 Bad Gateway</html>`, `{"PowerState": "On"}`, `[]`} {
		synctest.Test(t, func(t *testing.T) {
			f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/redfish/v1/Systems/1/" {
					return false
				}
				w.WriteHeader(http.StatusOK)
				w.Write([]byte(body))
				return true
			}
			c := testClient(t, testConfig(), memTransport{f})
			_, err := c.System(t.Context(), "1")
			if !errors.Is(err, power.ErrMalformed) {
				t.Errorf("body %q: %v, want ErrMalformed", body, err)
			}
			n := 0
			for _, r := range f.requests() {
				if r == "GET /redfish/v1/Systems/1/ hooked" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("body %q: %d requests, want 1", body, n)
			}
		})
	}
}

// TestConcurrencyLimit: no more than MaxConcurrent requests are in flight to one BMC, and that
// many are (Systems reads members in parallel).
func TestConcurrencyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "moonshot.json", moonshotRules)
		var mu sync.Mutex
		inFlight, peak := 0, 0
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			mu.Lock()
			inFlight++
			peak = max(peak, inFlight)
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			inFlight--
			mu.Unlock()
			return false
		}
		cfg := testConfig()
		cfg.MaxConcurrent = 2
		c := testClient(t, cfg, memTransport{f})
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if _, err := c.Systems(t.Context()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if peak != 2 {
			t.Errorf("peak of %d requests in flight, want 2", peak)
		}
	})
}

// TestCloseLogsOut: Close DELETEs the session (freeing a slot in the BMC's small table), once;
// the client logs in again if used afterwards; with basic auth there is nothing to delete.
func TestCloseLogsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if _, err := c.Systems(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		if f.count("logout") != 1 || len(f.tokens) != 0 {
			t.Errorf("%d logouts, %d sessions left", f.count("logout"), len(f.tokens))
		}
		if _, err := c.Systems(t.Context()); err != nil {
			t.Fatalf("after Close: %v", err)
		}
		if n := f.count("login"); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "moonshot.json", moonshotRules)
		c := testClient(t, testConfig(), memTransport{f})
		if _, err := c.Systems(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, r := range f.requests() {
			if r[:6] == "DELETE" {
				t.Errorf("basic auth, yet %s", r)
			}
		}
	})
}

// TestCancel: a caller that gives up gets its context's error at once, and the breaker does not
// count it against the BMC.
func TestCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		cfg := testConfig()
		cfg.BreakerThreshold = 1
		c := testClient(t, cfg, dialRefused(&n))
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		_, err := c.Systems(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Systems = %v, want context.Canceled", err)
		}
		if h := c.Health(); h.Degraded || h.Failures != 0 {
			t.Errorf("health %+v after a cancelled call", h)
		}
	})
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 3 ", 3 * time.Second, true},
		{"Wed, 01 May 2024 12:00:30 GMT", 30 * time.Second, true},
		{"Wed, 01 May 2024 11:00:00 GMT", 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{strconv.FormatUint(1<<40, 10), 0, false},
	} {
		got, ok := retryAfter(tc.v, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}
