package fleet_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/vbmc"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/power/fleet"
	"github.com/imaged/imaged/internal/redfish"
)

// chassis is the BMC emulator, on loopback behind a handler that counts what the client asks
// and can make the BMC fail, with two blades and a fleet whose machines are:
// ms1-c1n1 (found by its MAC), ms1-c1n2 (bmc_system, its MAC matches nothing), ms1-c1n3 (no
// BMC) and ms1-c1n4 (no system has its MAC).
type chassis struct {
	bmcs    *fleet.BMCs
	blades  []*vbmc.MemBlade
	down    atomic.Bool  // every request gets 503
	listed  atomic.Int32 // GETs of the Systems collection
	logouts atomic.Int32 // DELETEs of a session

	mu     sync.Mutex
	events []string // "machine: message"
}

func newChassis(t *testing.T) *chassis {
	t.Helper()
	c := &chassis{}
	var blades []vbmc.Blade
	for i := range 2 {
		b := vbmc.NewMemBlade(fmt.Sprintf("blade-%d", i+1), mac(t, fmt.Sprintf("52:54:00:99:00:%02x", 0x11+i)))
		c.blades = append(c.blades, b)
		blades = append(blades, b)
	}
	bmc, err := vbmc.New(vbmc.Config{PlainHTTP: true, Username: "admin", Password: "s3cret-pw"}, blades, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.down.Load() {
			http.Error(w, "the BMC is rebooting", http.StatusServiceUnavailable)
			return
		}
		switch {
		case r.Method == "GET" && strings.TrimSuffix(r.URL.Path, "/") == "/redfish/v1/Systems":
			c.listed.Add(1)
		case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/redfish/v1/SessionService/Sessions/"):
			c.logouts.Add(1)
		}
		bmc.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cred := filepath.Join(t.TempDir(), "cred")
	if err := os.WriteFile(cred, []byte("username: admin\npassword: s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep, _ := url.Parse(srv.URL)
	cfg := fleet.Config{
		BMCs: []fleet.BMC{{Name: "ms1", Credentials: cred, Redfish: &redfish.Config{Endpoint: ep, Insecure: true,
			Retries: -1, BreakerThreshold: 2, BreakerCooldown: time.Millisecond, PollInterval: time.Millisecond}}},
		Machines: []fleet.Machine{
			{ID: "ms1-c1n1", BMC: "ms1", MACs: []net.HardwareAddr{mac(t, "52:54:00:00:00:01"), mac(t, "52:54:00:99:00:11")}},
			{ID: "ms1-c1n2", BMC: "ms1", System: "blade-2", MACs: []net.HardwareAddr{mac(t, "52:54:00:99:00:99")}},
			{ID: "ms1-c1n3", MACs: []net.HardwareAddr{mac(t, "52:54:00:99:00:13")}},
			{ID: "ms1-c1n4", BMC: "ms1", MACs: []net.HardwareAddr{mac(t, "52:54:00:99:00:14")}},
		},
	}
	c.bmcs, err = fleet.New(cfg, fleet.Deps{Events: func(m, msg string) {
		c.mu.Lock()
		c.events = append(c.events, m+": "+msg)
		c.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mac(t *testing.T, s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (c *chassis) takeEvents() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = nil
	slices.Sort(ev)
	return ev
}

// A machine is found behind its BMC by one of its MACs, once; bmc_system is used as given.
func TestMachinesBehindTheBMC(t *testing.T) {
	c := newChassis(t)
	ctx := t.Context()
	if err := c.bmcs.BootOnce(ctx, "ms1-c1n1", power.Pxe, ""); err != nil {
		t.Fatalf("boot once: %v", err)
	}
	if err := c.bmcs.Power(ctx, "ms1-c1n1", power.ActionOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if got := fmt.Sprint(c.blades[0].Boots(), c.blades[1].Boots()); got != "[Pxe] []" {
		t.Errorf("boots of blade-1 and blade-2: %s, want one PXE boot of blade-1", got)
	}
	listed := c.listed.Load()
	if listed == 0 {
		t.Fatal("the machine was found without listing the BMC's systems")
	}
	for range 3 {
		if st, err := c.bmcs.PowerState(ctx, "ms1-c1n1"); err != nil || st != power.On {
			t.Errorf("power state: %s, %v", st, err)
		}
	}
	if err := c.bmcs.Power(ctx, "ms1-c1n1", power.ActionOff); err != nil {
		t.Fatalf("power off: %v", err)
	}
	if n := c.listed.Load(); n != listed {
		t.Errorf("the systems were listed %d times more: the machine's system is learnt once", n-listed)
	}

	if err := c.bmcs.Power(ctx, "ms1-c1n2", power.ActionCycle); err != nil {
		t.Fatalf("power cycle by bmc_system: %v", err)
	}
	if sys, err := c.bmcs.System(ctx, "ms1-c1n2"); err != nil || sys.ID != "blade-2" || sys.Power != power.On {
		t.Errorf("ms1-c1n2: %+v, %v; want blade-2, on", sys, err)
	}
	if got := c.bmcs.BMCName("ms1-c1n2") + "," + c.bmcs.BMCName("ms1-c1n3"); got != "ms1," {
		t.Errorf("BMC names: %q", got)
	}
	if sys, err := c.bmcs.Systems(ctx, "ms1"); err != nil || len(sys) != 2 {
		t.Errorf("systems of ms1: %d, %v", len(sys), err)
	}
	c.bmcs.Close()
	if c.logouts.Load() != 1 {
		t.Errorf("Close ended %d sessions, want 1", c.logouts.Load())
	}
}

// Each way of naming a machine the fleet cannot drive has its own error.
func TestMachinesItCannotDrive(t *testing.T) {
	c := newChassis(t)
	ctx := t.Context()
	for _, tc := range []struct {
		id   string
		is   error
		says string
	}{
		{"ms1-c1n3", fleet.ErrNoBMC, "set machines[].bmc"},
		{"ms1-c9n9", power.ErrNotFound, `no machine "ms1-c9n9"`},
		{"ms1-c1n4", power.ErrNotFound, "has one of ms1-c1n4's MACs (52:54:00:99:00:14); set machines[].bmc_system"},
	} {
		err := c.bmcs.Power(ctx, tc.id, power.ActionOn)
		if !errors.Is(err, tc.is) || !strings.Contains(fmt.Sprint(err), tc.says) {
			t.Errorf("power on %s: %v; want %v saying %q", tc.id, err, tc.is, tc.says)
		}
	}
	if _, err := c.bmcs.Systems(ctx, "ms2"); !errors.Is(err, power.ErrNotFound) || !strings.Contains(err.Error(), "(ms1)") {
		t.Errorf("systems of an unknown BMC: %v", err)
	}
	if fmt.Sprint(c.blades[0].Boots(), c.blades[1].Boots()) != "[] []" {
		t.Error("a blade was powered on")
	}
}

// A BMC that keeps failing is marked degraded, and healthy again once it answers; each change
// is a line in the timeline of every machine behind it, and of no other.
func TestHealthChanges(t *testing.T) {
	c := newChassis(t)
	ctx := t.Context()
	if h, ok := c.bmcs.Health("ms1"); !ok || h.Degraded {
		t.Fatalf("health before: %+v, %v", h, ok)
	}
	c.down.Store(true)
	for range 2 {
		if err := c.bmcs.Power(ctx, "ms1-c1n2", power.ActionOn); err == nil {
			t.Fatal("power on succeeded while the BMC fails")
		}
	}
	if h, _ := c.bmcs.Health("ms1"); !h.Degraded || h.Failures != 2 {
		t.Errorf("health after 2 failures: %+v", h)
	}
	ev := c.takeEvents()
	if len(ev) != 3 || !strings.HasPrefix(ev[0], "ms1-c1n1: BMC ms1 is DEGRADED after 2 failed calls") ||
		!strings.HasPrefix(ev[1], "ms1-c1n2: BMC ms1 is DEGRADED") || !strings.HasPrefix(ev[2], "ms1-c1n4: BMC ms1 is DEGRADED") {
		t.Errorf("events when degraded:\n%s", strings.Join(ev, "\n"))
	}
	c.down.Store(false)
	// The breaker lets one call through once its cooldown (1 ms) has passed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.bmcs.Power(ctx, "ms1-c1n2", power.ActionOn)
		if err == nil {
			break
		}
		if !errors.Is(err, power.ErrDegraded) || time.Now().After(deadline) {
			t.Fatalf("power on once the BMC answers: %v", err)
		}
	}
	if h, _ := c.bmcs.Health("ms1"); h.Degraded {
		t.Errorf("health after a success: %+v", h)
	}
	if ev := c.takeEvents(); fmt.Sprint(ev) != "[ms1-c1n1: BMC ms1 is healthy again ms1-c1n2: BMC ms1 is healthy again ms1-c1n4: BMC ms1 is healthy again]" {
		t.Errorf("events when healthy again: %q", ev)
	}
	if _, ok := c.bmcs.Health("ms2"); ok {
		t.Error("an unknown BMC has a health")
	}
}

// New reads the credentials at once: a file others may read stops it, naming the BMC.
func TestNewRefusesReadableCredentials(t *testing.T) {
	cred := filepath.Join(t.TempDir(), "cred")
	os.WriteFile(cred, []byte("username: admin\npassword: pw\n"), 0o644)
	ep, _ := url.Parse("https://192.0.2.1")
	_, err := fleet.New(fleet.Config{BMCs: []fleet.BMC{{Name: "ms1", Credentials: cred, Redfish: &redfish.Config{Endpoint: ep}}}}, fleet.Deps{})
	if err == nil || !strings.Contains(err.Error(), "bmcs ms1") || !strings.Contains(err.Error(), "readable by everyone") {
		t.Errorf("New with a world-readable credentials file: %v", err)
	}
	if _, err := fleet.New(fleet.Config{BMCs: []fleet.BMC{{Name: "ms1", Credentials: cred}}}, fleet.Deps{}); err == nil {
		t.Error("New accepted a BMC without a driver")
	}
}
