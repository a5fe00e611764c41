package vbmc_test

import (
	"net/http"
	"testing"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

const sys2 = "/redfish/v1/Systems/ms1-c1n2"

func TestPatchBootOverrideWithETags(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)

	first := ts.do(basicAuth, "GET", sys2, "")
	tag0 := first.header.Get("ETag")
	if tag0 == "" || first.json(t)["@odata.etag"] != tag0 {
		t.Fatalf("GET: no ETag: %v", first.header)
	}
	if again := ts.do(basicAuth, "GET", sys2, ""); again.header.Get("ETag") != tag0 {
		t.Fatalf("ETag changed without a change: %s then %s", tag0, again.header.Get("ETag"))
	}

	r := ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`, "If-Match", tag0)
	if r.status != http.StatusOK {
		t.Fatalf("PATCH: %d %s", r.status, r.body)
	}
	doc := r.json(t)
	if path(doc, "Boot", "BootSourceOverrideEnabled") != "Once" || path(doc, "Boot", "BootSourceOverrideTarget") != "Pxe" {
		t.Fatalf("PATCH answer: %s", r.body)
	}
	tag1 := r.header.Get("ETag")
	if tag1 == tag0 || doc["@odata.etag"] != tag1 {
		t.Fatalf("ETag after PATCH %q (before %q, body %v)", tag1, tag0, doc["@odata.etag"])
	}

	// A client holding the old representation must not overwrite the new one.
	wantError(t, ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideTarget":"Hdd"}}`, "If-Match", tag0), http.StatusPreconditionFailed, "PreconditionFailed", "")
	if got := path(ts.get(sys2), "Boot", "BootSourceOverrideTarget"); got != "Pxe" {
		t.Fatalf("412 PATCH changed the target to %v", got)
	}
	// The current tag, its weak form, "*" and a list holding it match.
	for _, im := range []string{tag1, "W/" + tag1, "*", `"nope", ` + tag1} {
		r := ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideMode":"UEFI"}}`, "If-Match", im)
		if r.status != 200 {
			t.Errorf("If-Match %s: %d %s", im, r.status, r.body)
		}
	}
	// Without If-Match a PATCH is accepted (DSP0266 does not require it).
	r = ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideMode":"Legacy","HttpBootUri":"http://10.99.0.1:8080/boot/uki.efi"}}`)
	if r.status != 200 || path(r.json(t), "Boot", "HttpBootUri") != "http://10.99.0.1:8080/boot/uki.efi" || path(r.json(t), "Boot", "BootSourceOverrideMode") != "Legacy" {
		t.Fatalf("PATCH without If-Match: %d %s", r.status, r.body)
	}
	// null clears HttpBootUri.
	if r := ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"HttpBootUri":null}}`); path(r.json(t), "Boot", "HttpBootUri") != nil {
		t.Errorf("HttpBootUri not cleared: %s", r.body)
	}
}

// The ETag is that of the representation, which includes the power state read from the blade.
func TestETagFollowsPowerState(t *testing.T) {
	fs := threeBlades()
	ts := startServer(t, baseConfig(), blades(fs)...)
	off := ts.do(basicAuth, "GET", sys2, "").header.Get("ETag")
	fs[1].setState(vbmc.StateOn)
	on := ts.do(basicAuth, "GET", sys2, "").header.Get("ETag")
	if off == on {
		t.Fatalf("ETag %s did not change when the blade powered on", on)
	}
	wantError(t, ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideTarget":"Hdd"}}`, "If-Match", off), 412, "PreconditionFailed", "")
}

func TestPatchValidation(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)
	before := ts.get(sys2)
	for _, c := range []struct {
		name, body string
		status     int
		id, arg    string
	}{
		{"power state is read-only", `{"PowerState":"Off"}`, 400, "PropertyNotWritable", "PowerState"},
		{"asset tag not writable here", `{"AssetTag":"x"}`, 400, "PropertyNotWritable", "AssetTag"},
		{"unknown property", `{"Frobnicate":1}`, 400, "PropertyUnknown", "Frobnicate"},
		{"annotation", `{"Boot":{"BootSourceOverrideTarget@Redfish.AllowableValues":["Cd"]}}`, 400, "PropertyNotWritable", "BootSourceOverrideTarget@Redfish.AllowableValues"},
		{"boot order read-only", `{"Boot":{"BootOrder":["Boot0001"]}}`, 400, "PropertyNotWritable", "BootOrder"},
		{"unknown boot property", `{"Boot":{"BootFast":true}}`, 400, "PropertyUnknown", "BootFast"},
		{"target not offered", `{"Boot":{"BootSourceOverrideTarget":"Cd"}}`, 400, "PropertyValueNotInList", "Cd"},
		{"enabled bogus", `{"Boot":{"BootSourceOverrideEnabled":"Twice"}}`, 400, "PropertyValueNotInList", "BootSourceOverrideEnabled"},
		{"mode bogus", `{"Boot":{"BootSourceOverrideMode":"EFI"}}`, 400, "PropertyValueNotInList", "EFI"},
		{"enabled wrong type", `{"Boot":{"BootSourceOverrideEnabled":1}}`, 400, "PropertyValueTypeError", "BootSourceOverrideEnabled"},
		{"enabled null", `{"Boot":{"BootSourceOverrideEnabled":null}}`, 400, "PropertyValueTypeError", "BootSourceOverrideEnabled"},
		{"boot not an object", `{"Boot":"Pxe"}`, 400, "PropertyValueTypeError", "Boot"},
		{"uri not http", `{"Boot":{"HttpBootUri":"ftp://x/y"}}`, 400, "PropertyValueFormatError", "HttpBootUri"},
		{"malformed", `{"Boot":`, 400, "MalformedJSON", ""},
		{"array", `[]`, 400, "MalformedJSON", ""},
		{"null", `null`, 400, "MalformedJSON", ""},
		{"empty object", `{}`, 400, "EmptyJSON", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, ts.do(basicAuth, "PATCH", sys2, c.body), c.status, c.id, c.arg)
		})
	}
	// One bad property fails the whole PATCH: nothing is applied, and every problem is listed.
	r := ts.do(basicAuth, "PATCH", sys2, `{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Floppy"},"PowerState":"On"}`)
	if r.status != 400 {
		t.Fatalf("mixed PATCH: %d %s", r.status, r.body)
	}
	env := r.json(t)
	if n := len(path(env, "error", "@Message.ExtendedInfo").([]any)); n != 2 || path(env, "error", "code") != "Base.1.16.0.GeneralError" {
		t.Errorf("mixed PATCH: %d messages, code %v: %s", n, path(env, "error", "code"), r.body)
	}
	after := ts.get(sys2)
	if after["@odata.etag"] != before["@odata.etag"] {
		t.Errorf("a failed PATCH changed the system:\n%v\n%v", before["Boot"], after["Boot"])
	}
	// Too large a body.
	big := `{"Boot":{"HttpBootUri":"http://x/` + string(make([]byte, 70<<10)) + `"}}`
	wantError(t, ts.do(basicAuth, "PATCH", sys2, big), http.StatusRequestEntityTooLarge, "PayloadTooLarge", "")
}
