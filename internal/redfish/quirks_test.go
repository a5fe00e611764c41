package redfish

import (
	"errors"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/imaged/imaged/internal/power"
)

// TestQuirkDetection: each fixture is recognised from its service root (or, when the root does
// not name the manager, from the manager), and the identities around the table's edges land
// where they should.
func TestQuirkDetection(t *testing.T) {
	for _, tc := range []struct {
		file, want string
		strip      bool // remove the root's Oem, so that only the Manager resource tells
	}{
		{"ilo4.json", "hpe-ilo4", false},
		{"ilo5-1.30.json", "hpe-ilo5-pre1.40", false},
		{"ilo5-1.30.json", "hpe-ilo5-pre1.40", true},
		{"ilo5-2.72.json", "hpe-ilo", false},
		{"moonshot.json", "hpe-moonshot-cm", false},
		{"moonshot.json", "hpe-moonshot-cm", true},
	} {
		synctest.Test(t, func(t *testing.T) {
			r := map[string]rules{"ilo4.json": ilo4Rules, "ilo5-1.30.json": ilo5v130Rules, "ilo5-2.72.json": ilo5v272Rules, "moonshot.json": moonshotRules}[tc.file]
			f := newFake(t, tc.file, r)
			if tc.strip {
				root := f.res["/redfish/v1/"]
				root["Vendor"] = "HPE"
				delete(root, "Oem")
			}
			c := testClient(t, testConfig(), memTransport{f})
			if _, _, err := c.session(t.Context()); err != nil {
				t.Fatal(err)
			}
			if c.quirks.Name != tc.want {
				t.Errorf("%s (root Oem stripped: %v): quirks %q, want %q", tc.file, tc.strip, c.quirks.Name, tc.want)
			}
			if got := f.count("GET /redfish/v1/Managers/1/"); (got > 0) != tc.strip {
				t.Errorf("%s: manager read %d times; it is needed only when the root does not name it", tc.file, got)
			}
		})
	}

	for _, tc := range []struct {
		id   identity
		want string
	}{
		{identity{Vendor: "HPE", Model: "iLO 5", Firmware: "1.39"}, "hpe-ilo5-pre1.40"},
		{identity{Vendor: "HPE", Model: "iLO 5", Firmware: "iLO 5 v1.4"}, "hpe-ilo"}, // 1.4 is 1.40
		{identity{Vendor: "HPE", Model: "iLO 5", Firmware: "1.40 Nov 01 2018"}, "hpe-ilo"},
		{identity{Vendor: "HPE", Model: "iLO 5", Firmware: ""}, "hpe-ilo"},
		{identity{Oem: []string{"Hpe"}, Model: "iLO 6", Firmware: "1.05"}, "hpe-ilo"},
		{identity{Oem: []string{"Hp"}, Model: "iLO 4", Firmware: "2.55"}, "hpe-ilo4"},
		{identity{Vendor: "Dell", Model: "14G Monolithic", Firmware: "4.40.00.00"}, "standard"},
		{identity{Vendor: "Supermicro", Model: "iLO 5"}, "standard"}, // iLO is HPE's: no Hp/Hpe mark, no quirk
		{identity{}, "standard"},
	} {
		if got := quirksFor(tc.id).Name; got != tc.want {
			t.Errorf("quirksFor(%+v) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestQuirkNoBootModeWrite: UEFI HTTP boot on an iLO 5 in Legacy mode fails as ErrUnsupported
// without a PATCH, because iLO refuses BootSourceOverrideMode writes; without the quirk the
// client would send Mode and meet the iLO's 400; on a standard BMC that lists UEFI, Mode is sent
// and the override takes.
func TestQuirkNoBootModeWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.SetBootOnce(t.Context(), "1", power.UefiHttp, bootURI); !errors.Is(err, power.ErrUnsupported) {
			t.Errorf("UefiHttp in Legacy mode on iLO = %v, want ErrUnsupported", err)
		}
		if n := f.count("PATCH"); n != 0 {
			t.Errorf("%d PATCHes sent", n)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		cfg := testConfig()
		cfg.Quirks = &Quirks{Name: "none", TrailingSlash: true}
		c := testClient(t, cfg, memTransport{f})
		err := c.SetBootOnce(t.Context(), "1", power.UefiHttp, bootURI)
		var he *power.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusBadRequest || f.count("modeWrite") != 1 {
			t.Errorf("without the quirk: %v (mode writes %d); the fake iLO should have refused the Mode write", err, f.count("modeWrite"))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		r := ilo5v130Rules
		r.modeWriteStatus = 0
		f := newFake(t, "ilo5-1.30.json", r)
		boot := f.system("/redfish/v1/Systems/1/")["Boot"].(map[string]any)
		boot["HttpBootUri"] = nil
		boot["BootSourceOverrideMode@Redfish.AllowableValues"] = []any{"Legacy", "UEFI"}
		cfg := testConfig()
		cfg.Quirks = &Quirks{Name: "standard"}
		c := testClient(t, cfg, memTransport{f})
		if err := c.SetBootOnce(t.Context(), "1", power.UefiHttp, bootURI); err != nil {
			t.Fatalf("standard BMC: %v", err)
		}
		if s, _ := c.System(t.Context(), "1"); s.Boot.Mode != "UEFI" || s.Boot.Target != power.UefiHttp {
			t.Errorf("standard BMC: boot %+v, want UefiHttp in UEFI mode", s.Boot)
		}
	})
}

// TestQuirkTrailingSlash: iLO 5 1.30 answers 308 to a URI without a trailing slash. With the
// detected quirk no 308 is ever met; without it the client follows the 308 keeping method and
// body (a PATCH still lands); a redirect loop ends after a bounded number of hops.
func TestQuirkTrailingSlash(t *testing.T) {
	const noSlash = "/redfish/v1/Systems/1"
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if _, err := c.call(t.Context(), request{method: http.MethodGet, path: noSlash}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Power(t.Context(), "1", power.ActionOn); err != nil {
			t.Fatal(err)
		}
		if n := f.count("308"); n != 0 {
			t.Errorf("%d redirects met with the quirk detected", n)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		cfg := testConfig()
		cfg.Quirks = &Quirks{Name: "none", NoBootModeWrite: true}
		c := testClient(t, cfg, memTransport{f})
		s, err := c.readSystem(t.Context(), noSlash)
		if err != nil {
			t.Fatal(err)
		}
		body := []byte(`{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`)
		if _, err := c.call(t.Context(), request{method: http.MethodPatch, path: noSlash, body: body, ifMatch: s.ifMatch()}, nil); err != nil {
			t.Fatal(err)
		}
		if n := f.count("308"); n != 2 {
			t.Errorf("%d redirects, want 2 (the GET and the PATCH)", n)
		}
		if b := f.system("/redfish/v1/Systems/1/")["Boot"].(map[string]any); b["BootSourceOverrideTarget"] != "Pxe" {
			t.Errorf("the redirected PATCH lost its body: boot %v", b)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo5-1.30.json", ilo5v130Rules)
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/redfish/v1/loop/" {
				w.Header().Set("Location", "/redfish/v1/loop/")
				w.WriteHeader(http.StatusTemporaryRedirect)
				return true
			}
			return false
		}
		c := testClient(t, testConfig(), memTransport{f})
		_, err := c.call(t.Context(), request{method: http.MethodGet, path: "/redfish/v1/loop/"}, nil)
		var he *power.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusTemporaryRedirect {
			t.Errorf("redirect loop = %v, want the last 307 as an error", err)
		}
		n := 0
		for _, r := range f.requests() {
			if r == "GET /redfish/v1/loop/ hooked" {
				n++
			}
		}
		if n != maxRedirects+1 {
			t.Errorf("%d requests in the loop, want %d", n, maxRedirects+1)
		}
	})
}

// TestQuirkSuccessIn400: iLO 4 firmware that answers a successful reset or PATCH with 400 and
// only Success messages; with the quirk that is success; without, it is the error it looks like.
// A 2xx envelope (iLO 5) is success for every BMC.
func TestQuirkSuccessIn400(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo4.json", ilo4Rules)
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.Power(t.Context(), "1", power.ActionOff); err != nil {
			t.Fatalf("with the quirk: %v", err)
		}
		if err := c.SetBootOnce(t.Context(), "1", power.Pxe, ""); err != nil {
			t.Fatalf("with the quirk: %v", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "ilo4.json", ilo4Rules)
		cfg := testConfig()
		cfg.Quirks = &Quirks{Name: "none", NoBootModeWrite: true}
		c := testClient(t, cfg, memTransport{f})
		err := c.Power(t.Context(), "1", power.ActionOff)
		var he *power.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
			t.Errorf("without the quirk: %v, want HTTP 400", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		r := ilo5v272Rules
		r.envelope = 400 // iLO 5 is not granted the 400 quirk
		f := newFake(t, "ilo5-2.72.json", r)
		c := testClient(t, testConfig(), memTransport{f})
		if err := c.Power(t.Context(), "1", power.ActionOff); err == nil {
			t.Error("a 400 envelope was taken as success on iLO 5")
		}
	})
	// A 400 that mixes Success with a real error is an error even with the quirk.
	if successEnvelope([]byte(`{"error":{"@Message.ExtendedInfo":[{"MessageId":"Base.1.4.Success"},{"MessageId":"Base.1.4.PropertyValueNotInList"}]}}`)) {
		t.Error("a mixed envelope counted as success")
	}
	if successEnvelope([]byte(`{"error":{"code":"Base.1.4.GeneralError","message":"x"}}`)) {
		t.Error("an envelope without messages counted as success")
	}
}

func TestFirmwareBelow(t *testing.T) {
	for _, tc := range []struct {
		fw   string
		want bool
	}{
		{"1.30", true}, {"iLO 5 v1.30", true}, {"1.39", true}, {"1.4", false}, {"1.40", false},
		{"v1.45", false}, {"2.72 Sep 04 2022", false}, {"1.30 Nov 20 2018", true}, {"", false}, {"junk", false},
	} {
		if got := firmwareBelow(tc.fw, 1, 40); got != tc.want {
			t.Errorf("firmwareBelow(%q, 1.40) = %v, want %v", tc.fw, got, tc.want)
		}
	}
}
