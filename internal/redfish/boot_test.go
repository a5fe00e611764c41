package redfish

import (
	"errors"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/imaged/imaged/internal/power"
)

const bootURI = "http://10.10.0.1/boot/ipxe.efi"

// TestSetBootOnce sets a one-time PXE boot on every fixture (their fakes demand If-Match,
// refuse If-Match on actions, answer with success envelopes, and show the new override only
// after a read or two) and reads it back.
func TestSetBootOnce(t *testing.T) {
	for _, tc := range []struct {
		file  string
		rules rules
		id    string
	}{
		{"ilo4.json", ilo4Rules, "1"},
		{"ilo5-1.30.json", ilo5v130Rules, "1"},
		{"ilo5-2.72.json", ilo5v272Rules, "1"},
		{"moonshot.json", moonshotRules, "C3N1"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t, tc.file, tc.rules)
				c := testClient(t, testConfig(), memTransport{f})
				if err := c.SetBootOnce(t.Context(), tc.id, power.Pxe, ""); err != nil {
					t.Fatal(err)
				}
				s, err := c.System(t.Context(), tc.id)
				if err != nil {
					t.Fatal(err)
				}
				if s.Boot.Target != power.Pxe || !s.Boot.Once() {
					t.Errorf("boot override %s/%s, want pxe/Once", s.Boot.Target, s.Boot.Enabled)
				}
				if n := f.count("PATCH"); n != 1 {
					t.Errorf("%d PATCHes, want 1", n)
				}
				if n := f.count("modeWrite"); n != 0 {
					t.Errorf("BootSourceOverrideMode written %d times", n)
				}
				if err := c.SetBootOnce(t.Context(), tc.id, power.None, ""); err != nil {
					t.Fatal(err)
				}
				if s, _ := c.System(t.Context(), tc.id); s.Boot.Once() {
					t.Errorf("override still %s/%s after clearing it", s.Boot.Target, s.Boot.Enabled)
				}
			})
		})
	}
}

// TestSetBootOnceUefiHttp: on iLO 5 in UEFI mode the override carries HttpBootUri and no Mode,
// and is read back with the URI.
func TestSetBootOnceUefiHttp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.SetBootOnce(t.Context(), "1", power.UefiHttp, bootURI); err != nil {
			t.Fatal(err)
		}
		s, err := c.System(t.Context(), "1")
		if err != nil {
			t.Fatal(err)
		}
		if s.Boot.Target != power.UefiHttp || s.Boot.URI != bootURI || !s.Boot.Once() {
			t.Errorf("boot override %+v", s.Boot)
		}
	})
}

// TestSetBootOnceRefused: what the firmware does not offer fails as ErrUnsupported before any
// PATCH; bad arguments fail before any I/O.
func TestSetBootOnceRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo4.json", ilo4Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.SetBootOnce(t.Context(), "1", power.UefiHttp, bootURI); !errors.Is(err, power.ErrUnsupported) {
			t.Errorf("UefiHttp on iLO 4 = %v, want ErrUnsupported", err)
		}
		for _, bad := range []struct {
			target power.BootTarget
			uri    string
		}{{power.Pxe, bootURI}, {power.UefiHttp, ""}, {power.UefiHttp, "/relative"}, {"cd", ""}} {
			if err := c.SetBootOnce(t.Context(), "1", bad.target, bad.uri); err == nil {
				t.Errorf("SetBootOnce(%q, %q) accepted", bad.target, bad.uri)
			}
		}
		if n := f.count("PATCH"); n != 0 {
			t.Errorf("%d PATCHes sent", n)
		}
	})
}

// TestIfMatch: the ETag of the read goes with the PATCH (the iLO 5 fake answers 428 without
// one); a 412 because the system changed meanwhile is met with one re-read and one retry; a
// second 412 is ErrPrecondition, after exactly two PATCHes.
func TestIfMatch(t *testing.T) {
	sys := "/redfish/v1/Systems/1/"
	t.Run("stale once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
			bumped := false
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodPatch && !bumped {
					bumped = true
					f.setSystem(sys, "IndicatorLED", "Lit") // someone else changed it
				}
				return false
			}
			c := testClient(t, testConfig(), memTransport{f})
			if err := c.SetBootOnce(t.Context(), "1", power.Pxe, ""); err != nil {
				t.Fatal(err)
			}
			if f.count("412") != 1 || f.count("PATCH") != 2 {
				t.Errorf("%d 412s and %d PATCHes, want 1 and 2", f.count("412"), f.count("PATCH"))
			}
		})
	})
	t.Run("stale always", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodPatch {
					f.setSystem(sys, "IndicatorLED", "Lit")
				}
				return false
			}
			c := testClient(t, testConfig(), memTransport{f})
			err := c.SetBootOnce(t.Context(), "1", power.Pxe, "")
			if !errors.Is(err, power.ErrPrecondition) {
				t.Fatalf("SetBootOnce = %v, want ErrPrecondition", err)
			}
			var he *power.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusPreconditionFailed || he.MessageID != "Base.1.4.PreconditionFailed" {
				t.Errorf("error %v does not carry the 412 and its MessageId", err)
			}
			if n := f.count("PATCH"); n != 2 {
				t.Errorf("%d PATCHes, want 2", n)
			}
		})
	})
}

// TestNoIfMatchOnActions: even asked to, the client sends no If-Match on a POST (the fakes
// answer 400 to one), but does on a PATCH.
func TestNoIfMatchOnActions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-2.72.json", ilo5v272Rules)
		var seen []string
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			seen = append(seen, r.Method+" "+r.Header.Get("If-Match"))
			return false
		}
		c := testClient(t, testConfig(), memTransport{f})
		body := []byte(`{"ResetType":"ForceOff"}`)
		_, err := c.call(t.Context(), request{method: http.MethodPost, path: "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset/", body: body, ifMatch: `W/"1"`}, nil)
		if err != nil {
			t.Fatalf("POST with ifMatch set: %v", err)
		}
		for _, s := range seen {
			if s[:4] == "POST" && s != "POST " {
				t.Errorf("sent %q", s)
			}
		}
	})
}

// TestBootSourceBothWays: every BootTarget maps onto its Redfish BootSource and back, and a
// source with no BootTarget keeps its name.
func TestBootSourceBothWays(t *testing.T) {
	want := map[power.BootTarget]schemas.BootSource{power.Pxe: "Pxe", power.UefiHttp: "UefiHttp", power.Disk: "Hdd", power.None: "None"}
	for _, bt := range power.BootTargets {
		if got := bootSource(bt); got != want[bt] {
			t.Errorf("bootSource(%s) = %q, want %q", bt, got, want[bt])
		}
		if got := bootTarget(want[bt]); got != bt {
			t.Errorf("bootTarget(%q) = %s, want %s", want[bt], got, bt)
		}
	}
	if got := bootTarget(""); got != power.None {
		t.Errorf(`bootTarget("") = %s, want none`, got)
	}
	if got := bootTarget("Cd"); got != "cd" {
		t.Errorf(`bootTarget("Cd") = %s, want cd`, got)
	}
}
