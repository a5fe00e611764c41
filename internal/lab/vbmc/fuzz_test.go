package vbmc

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeSystemPatch: any body either yields a patch whose every value is one the service
// offers, or errors that are well-formed Base messages; never both, never a panic.
func FuzzDecodeSystemPatch(f *testing.F) {
	for _, s := range []string{
		`{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`,
		`{"Boot":{"BootSourceOverrideMode":"UEFI","HttpBootUri":"http://10.99.0.1/a.efi"}}`,
		`{"Boot":{"HttpBootUri":null}}`, `{"PowerState":"On"}`, `{"Boot":"x"}`, `{}`, `null`, `[]`, ``,
		`{"Boot":{"BootSourceOverrideTarget":"Cd","BootOrder":[]},"AssetTag":1,"x@odata.type":2}`,
		`{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideEnabled":"Nope"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, errs := decodeSystemPatch(body)
		if len(errs) > 0 {
			if p != (systemPatch{}) {
				t.Fatalf("errors and a patch: %+v %+v", p, errs)
			}
			for _, e := range errs {
				checkMessage(t, e)
			}
			return
		}
		if p.Enabled != nil && !slices.Contains(enabledValues, *p.Enabled) ||
			p.Target != nil && !slices.Contains(targetValues, string(*p.Target)) ||
			p.Mode != nil && !slices.Contains(modeValues, *p.Mode) ||
			p.URI != nil && *p.URI != "" && !httpURL(*p.URI) {
			t.Fatalf("accepted a value the service does not offer: %s", body)
		}
		// An accepted body is a JSON object with Boot and nothing else.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil || len(top) != 1 || top["Boot"] == nil {
			t.Fatalf("accepted %q", body)
		}
		var o bootSettings
		p.apply(&o)
	})
}

// FuzzDecodeReset: any body yields exactly one of an offered reset type or errors.
func FuzzDecodeReset(f *testing.F) {
	for _, s := range []string{`{"ResetType":"On"}`, `{"ResetType":"ForceOff"}`, `{"ResetType":"Nmi"}`,
		`{"ResetType":1}`, `{"ResetType":null}`, `{"ResetType":"On","X":1}`, `{}`, ``, `  `, `"On"`, `{"ResetType":"On"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rt, errs := decodeReset(body)
		if (rt == "") == (len(errs) == 0) {
			t.Fatalf("reset type %q with %d errors", rt, len(errs))
		}
		if rt != "" && !slices.Contains(resetValues, string(rt)) {
			t.Fatalf("accepted reset type %q", rt)
		}
		for _, e := range errs {
			checkMessage(t, e)
		}
	})
}

func checkMessage(t *testing.T, e extendedInfo) {
	t.Helper()
	if !strings.HasPrefix(e.MessageID, baseRegistry) || e.Message == "" || e.Resolution == "" || e.MessageSeverity == "" {
		t.Fatalf("malformed message %+v", e)
	}
	if _, err := json.Marshal(e); err != nil {
		t.Fatalf("message does not encode: %v", err)
	}
}
