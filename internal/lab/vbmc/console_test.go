package vbmc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleLog(t *testing.T) {
	fs := threeBlades()
	dir := t.TempDir()
	fs[1].console = filepath.Join(dir, "ms1-c1n2.log")
	var b strings.Builder
	for i := 1; i <= 200; i++ {
		fmt.Fprintf(&b, "%8.3f line %d\n", float64(i)/10, i)
	}
	b.WriteString("   20.100 iPXE 1.21.1+ -- Open Source Network Boot Firmware") // no newline yet
	if err := os.WriteFile(fs[1].console, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	fs[2].console = filepath.Join(dir, "never-powered-on.log")
	ts := startServer(t, baseConfig(), blades(fs)...)
	const url = "/redfish/v1/Systems/ms1-c1n2/Oem/Imaged/ConsoleLog"

	r := ts.do(basicAuth, "GET", url, "")
	if r.status != 200 || string(r.body) != b.String() || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("whole log: %d %q, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
	}
	r = ts.do(basicAuth, "GET", url, "", "Range", "bytes=0-8")
	if r.status != 206 || string(r.body) != "   0.100 " {
		t.Fatalf("range: %d %q", r.status, r.body)
	}
	size := len(b.String())
	r = ts.do(basicAuth, "GET", url, "", "Range", fmt.Sprintf("bytes=%d-", size-10))
	if r.status != 206 || string(r.body) != b.String()[size-10:] {
		t.Fatalf("follow from an offset: %d %q", r.status, r.body)
	}
	for _, c := range []struct {
		q    string
		want string
	}{
		{"?tail=1", "   20.100 iPXE 1.21.1+ -- Open Source Network Boot Firmware"},
		{"?tail=3", "  19.900 line 199\n  20.000 line 200\n   20.100 iPXE 1.21.1+ -- Open Source Network Boot Firmware"},
		{"?tail=0", ""},
		{"?tail=100000", b.String()},
	} {
		r := ts.do(basicAuth, "GET", url+c.q, "")
		if r.status != 200 || string(r.body) != c.want {
			t.Errorf("%s: %d %q, want %q", c.q, r.status, r.body, c.want)
		}
	}
	wantError(t, ts.do(basicAuth, "GET", url+"?tail=many", ""), 400, "QueryParameterValueFormatError", "many")
	wantError(t, ts.do(basicAuth, "GET", "/redfish/v1/Systems/ms1-c1n3/Oem/Imaged/ConsoleLog", ""), 404, "ConsoleLogUnavailable", "ms1-c1n3")
	wantError(t, ts.do(basicAuth, "GET", "/redfish/v1/Systems/ms1-c1n1/Oem/Imaged/ConsoleLog", ""), 404, "ConsoleLogUnavailable", "ms1-c1n1")
}
