package power

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, a := range Actions {
		got, err := ParseAction(strings.ToUpper(string(a)))
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %q, %v", a, got, err)
		}
	}
	if _, err := ParseAction("reboot"); err == nil {
		t.Error("ParseAction(reboot) accepted an unknown action")
	}
	for _, bt := range BootTargets {
		got, err := ParseBootTarget(string(bt))
		if err != nil || got != bt {
			t.Errorf("ParseBootTarget(%q) = %q, %v", bt, got, err)
		}
	}
	if _, err := ParseBootTarget("Hdd"); err == nil {
		t.Error("ParseBootTarget(Hdd) accepted a Redfish name; the CLI word is disk")
	}
}

func TestHTTPErrorMatches(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   error
	}{
		{401, ErrAuth}, {403, ErrAuth}, {404, ErrNotFound}, {412, ErrPrecondition},
		{428, ErrPrecondition}, {500, ErrUnavailable}, {503, ErrUnavailable},
		{400, nil}, {405, nil},
	} {
		err := fmt.Errorf("redfish: op: %w", &HTTPError{Method: "GET", Path: "/redfish/v1/", Status: tc.status})
		for _, s := range []error{ErrAuth, ErrNotFound, ErrPrecondition, ErrUnavailable} {
			if got, want := errors.Is(err, s), s == tc.want; got != want {
				t.Errorf("status %d: errors.Is(%v) = %v, want %v", tc.status, s, got, want)
			}
		}
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != tc.status {
			t.Errorf("status %d: errors.As lost the HTTPError", tc.status)
		}
	}
	e := &HTTPError{Method: "PATCH", Path: "/redfish/v1/Systems/1/", Status: 400,
		MessageID: "Base.1.4.PropertyNotWritable", Message: "BootSourceOverrideMode is read only"}
	if got, want := e.Error(), "PATCH /redfish/v1/Systems/1/: HTTP 400 Bad Request: Base.1.4.PropertyNotWritable: BootSourceOverrideMode is read only"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestLeaf guards the package's promise: standard library only, so every caller may import it.
func TestLeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	self := false
	for _, d := range strings.Fields(string(out)) {
		if d == "github.com/imaged/imaged/internal/power" {
			self = true
			continue
		}
		t.Errorf("power depends on %s; it must stay standard library only", d)
	}
	if !self {
		t.Fatalf("go list did not list the package itself, so its output can't be trusted: %q", out)
	}
}
