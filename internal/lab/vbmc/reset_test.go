package vbmc_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

const reset2 = "/redfish/v1/Systems/ms1-c1n2/Actions/ComputerSystem.Reset"

func (ts *testServer) reset(typ string) reply {
	ts.t.Helper()
	return ts.do(basicAuth, "POST", reset2, `{"ResetType":"`+typ+`"}`)
}

func (ts *testServer) mustReset(typ string) {
	ts.t.Helper()
	if r := ts.reset(typ); r.status != http.StatusNoContent {
		ts.t.Fatalf("reset %s: %d %s", typ, r.status, r.body)
	}
}

func (ts *testServer) power() string {
	ts.t.Helper()
	return ts.get(sys2)["PowerState"].(string)
}

func wantCalls(t *testing.T, f *fakeBlade, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, f.Calls()); diff != "" {
		t.Fatalf("blade calls (-want +got):\n%s", diff)
	}
	f.resetCalls()
}

func TestResetSemantics(t *testing.T) {
	fs := threeBlades()
	f := fs[1]
	ts := startServer(t, baseConfig(), blades(fs)...)

	ts.mustReset("On")
	wantCalls(t, f, "PowerOn(None)")
	if ts.power() != "On" {
		t.Fatal("not On after On")
	}
	// On when On is refused, loudly, and the blade is not touched.
	wantError(t, ts.reset("On"), http.StatusConflict, "AlreadyOn", "ms1-c1n2")
	wantCalls(t, f)

	ts.mustReset("ForceOff")
	wantCalls(t, f, "ForceOff")
	if ts.power() != "Off" {
		t.Fatal("not Off after ForceOff")
	}
	// Off when Off: nothing to do, and success.
	ts.mustReset("ForceOff")
	ts.mustReset("GracefulShutdown")
	wantCalls(t, f)

	// Restarts of an Off system power it on.
	ts.mustReset("ForceRestart")
	wantCalls(t, f, "PowerOn(None)")
	ts.mustReset("ForceRestart")
	wantCalls(t, f, "ForceOff", "PowerOn(None)")
	ts.mustReset("PowerCycle")
	wantCalls(t, f, "ForceOff", "PowerOn(None)")

	// A guest that honours ACPI powers off; the answer may come before it has.
	ts.mustReset("GracefulShutdown")
	if err := <-f.shutdowns; err != nil {
		t.Fatal(err)
	}
	wantCalls(t, f, "GracefulShutdown")
	if ts.power() != "Off" {
		t.Fatal("not Off after the guest shut down")
	}

	// GracefulRestart: shutdown, then on again (in the background).
	ts.mustReset("On")
	f.resetCalls()
	ts.mustReset("GracefulRestart")
	waitFor(t, func() bool { return len(f.Calls()) == 2 })
	wantCalls(t, f, "GracefulShutdown", "PowerOn(None)")
	if ts.power() != "On" {
		t.Fatal("not On after GracefulRestart")
	}
	// The other systems were never touched.
	for _, other := range []*fakeBlade{fs[0], fs[2]} {
		wantCalls(t, other)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deafGuest starts the service with GracefulTimeout timeout and its middle blade On, running a
// guest that ignores the ACPI power button.
func deafGuest(t *testing.T, timeout time.Duration) (*testServer, *fakeBlade) {
	t.Helper()
	fs := threeBlades()
	f := fs[1]
	f.setState(vbmc.StateOn)
	f.ignoreACPI = true
	cfg := baseConfig()
	cfg.GracefulTimeout = timeout
	return startServer(t, cfg, blades(fs)...), f
}

// A guest that ignores ACPI stays On: that is what real hardware does with a firmware and no
// OS. A ForceOff then cancels the wait and cuts the power.
func TestGracefulShutdownIgnored(t *testing.T) {
	ts, f := deafGuest(t, time.Hour)

	start := time.Now()
	ts.mustReset("GracefulShutdown")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the graceful reset took %s to answer", d)
	}
	if ts.power() != "On" {
		t.Fatal("Off although the guest ignored the power button")
	}
	ts.mustReset("ForceOff")
	if err := <-f.shutdowns; !errors.Is(err, context.Canceled) {
		t.Fatalf("the pending graceful shutdown ended with %v, want it cancelled", err)
	}
	wantCalls(t, f, "GracefulShutdown", "ForceOff")
	if ts.power() != "Off" {
		t.Fatal("not Off after ForceOff")
	}

	// A GracefulRestart whose guest ignores ACPI never powers on again; the service's
	// shutdown cancels the wait (startServer's cleanup checks that Run returns).
	ts.mustReset("On")
	f.resetCalls()
	ts.mustReset("GracefulRestart")
	wantCalls(t, f, "GracefulShutdown")
}

func TestGracefulTimeout(t *testing.T) {
	ts, f := deafGuest(t, time.Second)
	ts.mustReset("GracefulShutdown")
	select {
	case err := <-f.shutdowns:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("graceful shutdown ended with %v, want the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulTimeout not applied")
	}
	if ts.power() != "On" {
		t.Fatal("state is not the truth (the guest is still on)")
	}
}

// BootSourceOverrideEnabled Once is consumed by the next boot; Continuous stays.
func TestBootOverrideConsumedByBoot(t *testing.T) {
	fs := threeBlades()
	f := fs[1]
	ts := startServer(t, baseConfig(), blades(fs)...)
	patch := func(body string) {
		t.Helper()
		if r := ts.do(basicAuth, "PATCH", sys2, body); r.status != 200 {
			t.Fatalf("PATCH: %d %s", r.status, r.body)
		}
	}
	boot := func() (string, string) {
		sys := ts.get(sys2)
		return path(sys, "Boot", "BootSourceOverrideEnabled").(string), path(sys, "Boot", "BootSourceOverrideTarget").(string)
	}

	patch(`{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`)
	ts.mustReset("On")
	wantCalls(t, f, "PowerOn(Pxe)")
	if e, tg := boot(); e != "Disabled" || tg != "Pxe" {
		t.Fatalf("after the boot: %s %s, want Disabled Pxe", e, tg)
	}
	ts.mustReset("ForceRestart")
	wantCalls(t, f, "ForceOff", "PowerOn(None)")

	// A refused On does not consume the override.
	patch(`{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`)
	wantError(t, ts.reset("On"), http.StatusConflict, "AlreadyOn", "")
	if e, _ := boot(); e != "Once" {
		t.Fatalf("refused On consumed the override: %s", e)
	}
	ts.mustReset("PowerCycle")
	wantCalls(t, f, "ForceOff", "PowerOn(Pxe)")
	if e, _ := boot(); e != "Disabled" {
		t.Fatal("PowerCycle did not consume the override")
	}

	patch(`{"Boot":{"BootSourceOverrideEnabled":"Continuous","BootSourceOverrideTarget":"UefiHttp","HttpBootUri":"http://10.99.0.1/x.efi"}}`)
	ts.mustReset("ForceRestart")
	ts.mustReset("ForceRestart")
	wantCalls(t, f, "ForceOff", "PowerOn(UefiHttp,persistent)", "ForceOff", "PowerOn(UefiHttp,persistent)")
	if e, tg := boot(); e != "Continuous" || tg != "UefiHttp" {
		t.Fatalf("Continuous consumed: %s %s", e, tg)
	}
	if b := f.boots[len(f.boots)-1]; b.HTTPURI != "http://10.99.0.1/x.efi" {
		t.Errorf("HttpBootUri not passed: %+v", b)
	}
}

// A power-on that fails is a 500 naming the cause, and keeps the override for the next try.
func TestPowerOnFailure(t *testing.T) {
	fs := threeBlades()
	f := fs[1]
	f.failOn = errors.New("tap device busy")
	ts := startServer(t, baseConfig(), blades(fs)...)
	if r := ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`); r.status != 200 {
		t.Fatal(r.status)
	}
	wantError(t, ts.reset("On"), http.StatusInternalServerError, "InternalError", "tap device busy")
	if e := path(ts.get(sys2), "Boot", "BootSourceOverrideEnabled"); e != "Once" {
		t.Fatalf("a failed boot consumed the override: %v", e)
	}
}

func TestResetValidation(t *testing.T) {
	fs := threeBlades()
	ts := startServer(t, baseConfig(), blades(fs)...)
	for _, c := range []struct {
		name, body string
		id, arg    string
	}{
		{"no body", ``, "ActionParameterMissing", "ResetType"},
		{"empty object", `{}`, "ActionParameterMissing", "ResetType"},
		{"not offered", `{"ResetType":"Nmi"}`, "ActionParameterValueNotInList", "Nmi"},
		{"bogus", `{"ResetType":"Reboot"}`, "ActionParameterValueNotInList", "Reboot"},
		{"case matters", `{"ResetType":"on"}`, "ActionParameterValueNotInList", "on"},
		{"wrong type", `{"ResetType":1}`, "ActionParameterValueTypeError", "ResetType"},
		{"null", `{"ResetType":null}`, "ActionParameterValueTypeError", "ResetType"},
		{"unknown parameter", `{"ResetType":"On","Force":true}`, "ActionParameterUnknown", "Force"},
		{"malformed", `{"ResetType":`, "MalformedJSON", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, ts.do(basicAuth, "POST", reset2, c.body), http.StatusBadRequest, c.id, c.arg)
		})
	}
	wantCalls(t, fs[1])
	wantError(t, ts.do(basicAuth, "POST", "/redfish/v1/Systems/nope/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`), 404, "ResourceMissingAtURI", "")
}
