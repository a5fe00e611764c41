package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/store"
)

// fakeBMCs answers for one machine, ms1-c1n1 behind BMC ms1; err, if set, is every call's answer.
type fakeBMCs struct {
	sys    power.System
	err    error
	health power.Health
	calls  []string
}

func (f *fakeBMCs) BMCName(m string) string {
	if m == "ms1-c1n1" {
		return "ms1"
	}
	return ""
}
func (f *fakeBMCs) System(ctx context.Context, m string) (power.System, error) { return f.sys, f.err }
func (f *fakeBMCs) Power(ctx context.Context, m string, a power.Action) error {
	f.calls = append(f.calls, "power "+string(a))
	if f.err == nil && a == power.ActionOff {
		f.sys.Power = power.Off
	}
	return f.err
}
func (f *fakeBMCs) BootOnce(ctx context.Context, m string, t power.BootTarget, uri string) error {
	f.calls = append(f.calls, "boot "+string(t)+" "+uri)
	if f.err == nil {
		f.sys.Boot = power.BootOverride{Target: t, Enabled: "Once", URI: uri}
	}
	return f.err
}
func (f *fakeBMCs) Systems(ctx context.Context, bmc string) ([]power.System, error) {
	if bmc != "ms1" {
		return nil, fmt.Errorf("no BMC %q: %w", bmc, power.ErrNotFound)
	}
	return []power.System{f.sys}, f.err
}
func (f *fakeBMCs) Health(bmc string) (power.Health, bool) { return f.health, bmc == "ms1" }
func (f *fakeBMCs) Names() []string                        { return []string{"ms1"} }

func bmcServer(t *testing.T) (http.Handler, *fakeBMCs, *inventory.Inventory) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SyncMachines([]machines.Machine{{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}}, {ID: "ms1-c1n2", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:12")}}})
	inv, err := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	f := &fakeBMCs{sys: power.System{ID: "C1N1", Power: power.On, Health: "OK", MACs: []net.HardwareAddr{mac}, ResetTypes: []string{"On", "ForceOff"}}}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), BMCs: f, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	return Authenticate(AuthConfig{AnonymousRead: true}, mux), f, inv
}

func TestBMCAPI(t *testing.T) {
	h, f, inv := bmcServer(t)
	op := &Principal{Name: "roller", Scope: ScopeOperate}
	steps := []struct {
		name   string
		call   call
		status int
		field  string
		want   string
	}{
		{"read a machine's system", call{"GET", "/api/v1/machines/ms1-c1n1/bmc", "", nil}, 200, "", `"macs": [
      "52:54:00:99:00:11"`},
		{"a machine without a BMC", call{"GET", "/api/v1/machines/ms1-c1n2/bmc", "", nil}, 409, "id", "no BMC configured"},
		{"an unknown machine", call{"GET", "/api/v1/machines/nope/bmc", "", nil}, 404, "id", ""},
		{"power without a scope", call{"POST", "/api/v1/machines/ms1-c1n1/power", `{"action":"off"}`, nil}, 401, "", "operate"},
		{"an unknown action", call{"POST", "/api/v1/machines/ms1-c1n1/power", `{"action":"explode"}`, op}, 400, "action", "unknown action"},
		{"power off", call{"POST", "/api/v1/machines/ms1-c1n1/power", `{"action":"off"}`, op}, 200, "", `"power": "Off"`},
		{"uefi-http without a uri", call{"POST", "/api/v1/machines/ms1-c1n1/boot", `{"target":"uefi-http"}`, op}, 400, "uri", ""},
		{"a uri for pxe", call{"POST", "/api/v1/machines/ms1-c1n1/boot", `{"target":"pxe","uri":"http://x/"}`, op}, 400, "uri", ""},
		{"boot pxe once", call{"POST", "/api/v1/machines/ms1-c1n1/boot", `{"target":"pxe"}`, op}, 200, "", `"enabled": "Once"`},
		{"the systems behind a BMC", call{"GET", "/api/v1/bmcs/ms1", "", nil}, 200, "", `"id": "C1N1"`},
		{"an unknown BMC", call{"GET", "/api/v1/bmcs/ms9", "", nil}, 404, "name", ""},
		{"the BMC list", call{"GET", "/api/v1/bmcs", "", nil}, 200, "", `"degraded": false`},
	}
	for _, s := range steps {
		status, e, body := s.call.do(h)
		if status != s.status || e.Field != s.field || !strings.Contains(body, s.want) {
			t.Errorf("%s: %d field %q, want %d field %q containing %q:\n%s", s.name, status, e.Field, s.status, s.field, s.want, body)
		}
	}
	if got := strings.Join(f.calls, "; "); got != "power off; boot pxe " {
		t.Errorf("BMC calls: %q", got)
	}
	ev, _ := inv.Events("ms1-c1n1", 0)
	if len(ev) != 2 || !strings.Contains(ev[0].Message, "power off (read back) by roller") {
		t.Errorf("events: %+v", ev)
	}

	// The BMC's troubles map to gateway errors, the breaker to 503 with Retry-After.
	for _, c := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("x: %w", power.ErrDegraded), 503},
		{fmt.Errorf("x: %w", power.ErrTimeout), 504},
		{fmt.Errorf("x: %w", power.ErrUnreachable), 502},
		{&power.HTTPError{Method: "POST", Path: "/redfish/v1/Systems/1", Status: 401}, 502},
		{fmt.Errorf("x: %w", power.ErrUnsupported), 400},
	} {
		f.err = c.err
		status, _, body := call{"POST", "/api/v1/machines/ms1-c1n1/power", `{"action":"cycle"}`, op}.do(h)
		if status != c.status {
			t.Errorf("%v: %d, want %d: %s", c.err, status, c.status, body)
		}
	}

	// The machine list carries the BMC's health.
	f.err, f.health = nil, power.Health{Degraded: true, Failures: 5, LastError: "connection refused"}
	_, _, body := call{"GET", "/api/v1/machines", "", nil}.do(h)
	if !strings.Contains(body, `"bmc_health": {
      "degraded": true`) {
		t.Errorf("machine list: %s", body)
	}
}
