package redfish

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/internal/power"
)

// TestBreaker: after BreakerThreshold failed operations the BMC is degraded: calls fail fast
// without a request until the cooldown has passed, Health, the metric and the callback say so;
// then one probe goes through; its failure means another cooldown, its success recovery.
func TestBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		var down atomic.Bool
		var requests atomic.Int32
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			requests.Add(1)
			if down.Load() {
				return dialRefused(new(atomic.Int32)).RoundTrip(r)
			}
			return memTransport{f}.RoundTrip(r)
		})
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		var changes []power.Health
		cfg := testConfig()
		cfg.Retries = -1
		cfg.BreakerThreshold = 3
		cfg.BreakerCooldown = 30 * time.Second
		cfg.OnHealthChange = func(h power.Health) { changes = append(changes, h) }
		cfg, _ = cfg.withDefaults()
		c := newClient(cfg, nil, m, rt)
		degraded := func() float64 { return testutil.ToFloat64(m.degraded.WithLabelValues("bmc1")) }

		if _, err := c.Systems(t.Context()); err != nil {
			t.Fatal(err)
		}
		down.Store(true)
		for i := range 3 {
			if _, err := c.System(t.Context(), "1"); !errors.Is(err, power.ErrUnreachable) {
				t.Fatalf("failure %d = %v", i, err)
			}
		}
		h := c.Health()
		if !h.Degraded || h.Failures != 3 || !strings.Contains(h.LastError, "connection refused") || !h.Since.Equal(time.Now()) {
			t.Errorf("health %+v, want degraded after 3 failures", h)
		}
		if len(changes) != 1 || !changes[0].Degraded || degraded() != 1 {
			t.Errorf("callback %+v and gauge %v, want one degraded change and 1", changes, degraded())
		}

		n := requests.Load()
		time.Sleep(29 * time.Second)
		_, err = c.System(t.Context(), "1")
		if !errors.Is(err, power.ErrDegraded) || requests.Load() != n {
			t.Fatalf("during cooldown: %v after %d requests, want ErrDegraded without a request", err, requests.Load()-n)
		}
		time.Sleep(time.Second)
		if _, err := c.System(t.Context(), "1"); !errors.Is(err, power.ErrUnreachable) || requests.Load() != n+1 {
			t.Fatalf("probe: %v after %d requests, want one request that fails", err, requests.Load()-n)
		}
		if _, err := c.System(t.Context(), "1"); !errors.Is(err, power.ErrDegraded) {
			t.Fatalf("after a failed probe = %v, want another cooldown", err)
		}

		time.Sleep(30 * time.Second)
		down.Store(false)
		if _, err := c.System(t.Context(), "1"); err != nil {
			t.Fatalf("successful probe: %v", err)
		}
		if h := c.Health(); h.Degraded || h.Failures != 0 || h.LastError != "" {
			t.Errorf("health %+v after recovery", h)
		}
		if len(changes) != 2 || changes[1].Degraded || degraded() != 0 {
			t.Errorf("callback %+v and gauge %v, want a recovery and 0", changes, degraded())
		}
		if got := testutil.ToFloat64(m.requests.WithLabelValues("bmc1", OutcomeDegraded)); got != 2 {
			t.Errorf("%v degraded outcomes counted, want 2", got)
		}
		if got := testutil.ToFloat64(m.requests.WithLabelValues("bmc1", OutcomeUnreachable)); got != 4 {
			t.Errorf("%v unreachable outcomes counted, want 4", got)
		}
	})
}

// TestBreakerOneProbe: after the cooldown only one call goes through; the others that arrive
// while it is in flight fail fast.
func TestBreakerOneProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		cfg := testConfig()
		cfg.Retries = -1
		cfg.BreakerThreshold = 1
		cfg.BreakerCooldown = 10 * time.Second
		release := make(chan struct{})
		var probes atomic.Int32
		mode := "ok"
		var mu sync.Mutex
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			m := mode
			mu.Unlock()
			switch m {
			case "down":
				return dialRefused(new(atomic.Int32)).RoundTrip(r)
			case "slow":
				probes.Add(1)
				<-release
			}
			return memTransport{f}.RoundTrip(r)
		})
		c := testClient(t, cfg, rt)
		if _, err := c.System(t.Context(), "1"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		mode = "down"
		mu.Unlock()
		if _, err := c.System(t.Context(), "1"); err == nil {
			t.Fatal("no failure")
		}
		time.Sleep(10 * time.Second)
		mu.Lock()
		mode = "slow"
		mu.Unlock()
		done := make(chan error)
		go func() {
			_, err := c.System(t.Context(), "1")
			done <- err
		}()
		synctest.Wait() // the probe is in flight
		for range 3 {
			if _, err := c.System(t.Context(), "1"); !errors.Is(err, power.ErrDegraded) {
				t.Errorf("second call during the probe = %v, want ErrDegraded", err)
			}
		}
		if probes.Load() != 1 {
			t.Errorf("%d requests during the half-open state, want 1", probes.Load())
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("probe: %v", err)
		}
		if c.Health().Degraded {
			t.Error("still degraded after a successful probe")
		}
	})
}

// TestBreakerIgnores4xx: answers about our request (404; 403 for an account without the
// privilege) show a working BMC and do not open the breaker.
func TestBreakerIgnores4xx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		cfg := testConfig()
		cfg.BreakerThreshold = 2
		c := testClient(t, cfg, memTransport{f})
		for range 5 {
			if _, err := c.System(t.Context(), "9"); !errors.Is(err, power.ErrNotFound) {
				t.Fatalf("System(9) = %v", err)
			}
		}
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPost {
				return false
			}
			f.fail(w, http.StatusForbidden, "Base.1.4.InsufficientPrivilege", "")
			return true
		}
		for range 5 {
			if err := c.Power(t.Context(), "1", power.ActionOff); !errors.Is(err, power.ErrAuth) {
				t.Fatalf("Power with a read-only account = %v, want ErrAuth", err)
			}
		}
		if h := c.Health(); h.Degraded || h.Failures != 0 {
			t.Errorf("health %+v after 404s and 403s", h)
		}
	})
}

func TestMetricsRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
	cfg := testConfig()
	cfg.Name = "ms1-cm"
	cfg, _ = cfg.withDefaults()
	newClient(cfg, nil, m, nil)
	cfg.Name = "ms2-cm"
	newClient(cfg, nil, m, nil) // a second BMC shares the metrics
	n, err := testutil.GatherAndCount(reg, "imaged_bmc_requests_total", "imaged_bmc_degraded")
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*len(outcomes) + 2; n != want {
		t.Errorf("%d series, want %d (every outcome from the start, for both BMCs)", n, want)
	}
}
