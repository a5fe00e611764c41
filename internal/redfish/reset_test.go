package redfish

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stmcginnis/gofish/schemas"

	"github.com/imaged/imaged/internal/power"
)

func TestPlan(t *testing.T) {
	ilo4 := []string{"On", "ForceOff", "ForceRestart", "Nmi", "PushPowerButton"}
	ilo5 := []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton", "GracefulRestart"}
	pushOnly := []string{"PushPowerButton", "ForceOff"}
	s := func(r schemas.ResetType, w power.State) step { return step{r, w} }
	for _, tc := range []struct {
		action  power.Action
		state   power.State
		allowed []string
		want    []step
		err     error
	}{
		{power.ActionOn, power.On, ilo5, nil, nil},
		{power.ActionOn, power.Off, ilo5, []step{s("On", power.On)}, nil},
		{power.ActionOn, power.Off, pushOnly, []step{s("PushPowerButton", power.On)}, nil},
		{power.ActionOn, power.Unknown, pushOnly, nil, power.ErrUnsupported}, // the button toggles: only when surely off
		{power.ActionOn, power.Off, []string{"ForceOn"}, []step{s("ForceOn", power.On)}, nil},
		{power.ActionOn, power.Off, nil, []step{s("On", power.On)}, nil}, // nothing listed: the standard first choice
		{power.ActionOff, power.Off, ilo5, nil, nil},
		{power.ActionOff, power.On, ilo5, []step{s("ForceOff", power.Off)}, nil},
		{power.ActionOff, power.On, []string{"On"}, nil, power.ErrUnsupported},
		{power.ActionShutdown, power.On, ilo5, []step{s("GracefulShutdown", power.Off)}, nil},
		{power.ActionShutdown, power.On, ilo4, []step{s("PushPowerButton", power.Off)}, nil},
		{power.ActionShutdown, power.Off, ilo4, nil, nil},
		{power.ActionRestart, power.On, ilo4, []step{s("ForceRestart", power.On)}, nil},
		{power.ActionRestart, power.Off, ilo4, []step{s("On", power.On)}, nil},
		{power.ActionRestart, power.On, []string{"PowerCycle", "On", "ForceOff"}, []step{s("PowerCycle", power.On)}, nil},
		{power.ActionRestart, power.On, []string{"On", "ForceOff"}, []step{s("ForceOff", power.Off), s("On", power.On)}, nil},
		{power.ActionRestart, power.On, pushOnly, []step{s("ForceOff", power.Off), s("PushPowerButton", power.On)}, nil},
		{power.ActionGracefulRestart, power.On, ilo5, []step{s("GracefulRestart", power.On)}, nil},
		{power.ActionGracefulRestart, power.On, ilo4, nil, power.ErrUnsupported},
		{power.ActionGracefulRestart, power.Off, ilo4, []step{s("On", power.On)}, nil},
		{power.ActionCycle, power.On, ilo4, []step{s("ForceOff", power.Off), s("On", power.On)}, nil},
		{power.ActionCycle, power.On, []string{"PowerCycle"}, []step{s("PowerCycle", power.On)}, nil},
		{power.ActionCycle, power.On, nil, []step{s("PowerCycle", power.On)}, nil},
		{power.ActionCycle, power.On, []string{"Nmi"}, nil, power.ErrUnsupported},
	} {
		got, err := plan(tc.action, tc.state, tc.allowed)
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("plan(%s, %s, %v) error = %v, want %v", tc.action, tc.state, tc.allowed, err, tc.err)
			continue
		}
		if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(step{})); d != "" {
			t.Errorf("plan(%s, %s, %v) (-want +got):\n%s", tc.action, tc.state, tc.allowed, d)
		}
	}
}

// TestPower drives each fixture through actions against a fake that refuses reset types outside
// AllowableValues and resets that make no sense in the current state (as iLO does), and whose
// transitions take several reads: every action must end read back in its state, with the reset
// types the firmware offers.
func TestPower(t *testing.T) {
	type act struct {
		action power.Action
		want   power.State
		resets []string // resets sent by this action
	}
	for _, tc := range []struct {
		file  string
		rules rules
		id    string
		acts  []act
	}{
		{"ilo4.json", ilo4Rules, "1", []act{
			{power.ActionOn, power.On, nil},
			{power.ActionShutdown, power.Off, []string{"PushPowerButton"}}, // no GracefulShutdown on iLO 4
			{power.ActionOn, power.On, []string{"On"}},
			{power.ActionRestart, power.On, []string{"ForceRestart"}},
			{power.ActionCycle, power.On, []string{"ForceOff", "On"}}, // no PowerCycle
			{power.ActionOff, power.Off, []string{"ForceOff"}},
			{power.ActionOff, power.Off, nil},
		}},
		{"ilo5-1.30.json", ilo5v130Rules, "1", []act{
			{power.ActionRestart, power.On, []string{"On"}}, // off: a restart powers it on
			{power.ActionShutdown, power.Off, []string{"GracefulShutdown"}},
		}},
		{"ilo5-2.72.json", ilo5v272Rules, "1", []act{
			{power.ActionGracefulRestart, power.On, []string{"GracefulRestart"}},
			{power.ActionCycle, power.On, []string{"ForceOff", "On"}},
		}},
		{"moonshot.json", moonshotRules, "C2N1", []act{
			{power.ActionOn, power.On, []string{"On"}},
			{power.ActionShutdown, power.Off, []string{"PushPowerButton"}},
			{power.ActionRestart, power.On, []string{"On"}},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t, tc.file, tc.rules)
				c := testClient(t, testConfig(), memTransport{f})
				for _, a := range tc.acts {
					before := map[string]int{}
					for _, r := range []string{"On", "ForceOff", "GracefulShutdown", "PushPowerButton", "ForceRestart", "GracefulRestart", "PowerCycle"} {
						before[r] = f.count("reset " + r)
					}
					if err := c.Power(t.Context(), tc.id, a.action); err != nil {
						t.Fatalf("%s: %v", a.action, err)
					}
					var sent []string
					for _, r := range []string{"On", "ForceOff", "GracefulShutdown", "PushPowerButton", "ForceRestart", "GracefulRestart", "PowerCycle"} {
						for range f.count("reset "+r) - before[r] {
							sent = append(sent, r)
						}
					}
					if d := cmp.Diff(a.resets, sent, cmp.Comparer(func(a, b []string) bool { return cmp.Equal(sortCopy(a), sortCopy(b)) })); d != "" {
						t.Errorf("%s sent resets (-want +got):\n%s", a.action, d)
					}
					// Read back: the fake's next read must show the state, not a transition.
					s, err := c.System(t.Context(), tc.id)
					if err != nil {
						t.Fatal(err)
					}
					if s.Power != a.want {
						t.Errorf("after %s: power %s, want %s", a.action, s.Power, a.want)
					}
				}
				if n := f.count("badReset"); n != 0 {
					t.Errorf("%d resets outside AllowableValues were sent", n)
				}
			})
		})
	}
}

func sortCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// TestPowerReadbackPolls: a transition that takes 3 reads is polled with backoff (1s, 2s, 4s)
// and Power returns the moment it is read back, not before.
func TestPowerReadbackPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := ilo5v272Rules
		r.transitionReads = 3
		f := newFake(t, "ilo5-2.72.json", r)
		c := testClient(t, testConfig(), memTransport{f})
		if _, err := c.System(t.Context(), "1"); err != nil {
			t.Fatal(err)
		}
		gets := f.count("GET /redfish/v1/Systems/1/")
		start := time.Now()
		if err := c.Power(t.Context(), "1", power.ActionOff); err != nil {
			t.Fatal(err)
		}
		// One read to plan, then reads at 0s, 1s, 3s (PoweringOff ×3) and 7s (Off).
		if got, want := time.Since(start), 7*time.Second; got != want {
			t.Errorf("Power took %s, want %s", got, want)
		}
		if got, want := f.count("GET /redfish/v1/Systems/1/")-gets, 1+4; got != want {
			t.Errorf("%d reads of the system, want %d", got, want)
		}
	})
}

// TestPowerReadbackTimeout: a machine that never gets there is ErrTimeout exactly at
// ReadbackTimeout, after a bounded number of reads.
func TestPowerReadbackTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := ilo5v272Rules
		r.transitionReads = 1 << 20
		f := newFake(t, "ilo5-2.72.json", r)
		cfg := testConfig()
		cfg.ReadbackTimeout = 30 * time.Second
		c := testClient(t, cfg, memTransport{f})
		start := time.Now()
		err := c.Power(t.Context(), "1", power.ActionOff)
		if !errors.Is(err, power.ErrTimeout) {
			t.Fatalf("Power = %v, want ErrTimeout", err)
		}
		if got := time.Since(start); got != 30*time.Second {
			t.Errorf("gave up after %s, want 30s", got)
		}
		// One read to plan, then reads at 0, 1, 3, 7, 15, 23 and 30s (the wait doubles up to
		// 8s; the last one is cut short to the deadline).
		if got, want := f.count("GET /redfish/v1/Systems/1/"), 1+7; got != want {
			t.Errorf("%d reads, want %d", got, want)
		}
		t.Log(err)
	})
}

// TestPowerSettles: a system caught PoweringOn is left to finish before it is judged: "on" then
// needs no reset at all.
func TestPowerSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		f.phases["/redfish/v1/Systems/1/"] = []string{"PoweringOn", "PoweringOn"}
		f.setSystem("/redfish/v1/Systems/1/", "PowerState", "On")
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.Power(t.Context(), "1", power.ActionOn); err != nil {
			t.Fatal(err)
		}
		if n := f.count("reset On"); n != 0 {
			t.Errorf("sent On %d times to a system that was powering on", n)
		}
	})
}

// TestPowerUnsupported: an action the firmware has no reset type for fails before anything is
// sent.
func TestPowerUnsupported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "moonshot.json", moonshotRules)
		c := testClient(t, testConfig(), memTransport{f})
		err := c.Power(t.Context(), "C1N1", power.ActionGracefulRestart)
		if !errors.Is(err, power.ErrUnsupported) {
			t.Fatalf("GracefulRestart on a Moonshot cartridge = %v, want ErrUnsupported", err)
		}
		if n := f.count("POST /redfish/v1/Systems/c1n1/Actions/ComputerSystem.Reset/"); n != 0 {
			t.Errorf("%d resets sent", n)
		}
		if err := c.Power(t.Context(), "C1N1", "reboot"); !errors.Is(err, power.ErrUnsupported) {
			t.Errorf("unknown action = %v, want ErrUnsupported", err)
		}
	})
}

// TestResetActionInfo: a system that lists its reset types in an @Redfish.ActionInfo resource
// (no inline AllowableValues) has them read from there.
func TestResetActionInfo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		p := "/redfish/v1/Systems/1/"
		doc := f.system(p)
		rs := doc["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
		rs["@Redfish.ActionInfo"] = "/redfish/v1/Systems/1/ResetActionInfo/"
		delete(rs, "ResetType@Redfish.AllowableValues")
		f.res["/redfish/v1/Systems/1/ResetActionInfo/"] = map[string]any{
			"@odata.id":  "/redfish/v1/Systems/1/ResetActionInfo/",
			"Parameters": []any{map[string]any{"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": []any{"ForceOff", "PowerCycle", "On"}}},
		}
		c := testClient(t, testConfig(), memTransport{f})
		s, err := c.findSystem(t.Context(), "1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.resetTypes(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"ForceOff", "PowerCycle", "On"}, got); d != "" {
			t.Errorf("reset types (-want +got):\n%s", d)
		}
	})
}
