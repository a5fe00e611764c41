package ipxe

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type inv map[string]Machine

func (i inv) ByMAC(mac net.HardwareAddr) (Machine, bool) { m, ok := i[mac.String()]; return m, ok }

type tokens struct {
	issued []Machine
	from   []netip.Addr
	refuse bool
}

func (t *tokens) Issue(m Machine, remote netip.Addr) (string, error) {
	t.from = append(t.from, remote)
	if t.refuse {
		return "", fmt.Errorf("%w: not from the leased address", ErrRefused)
	}
	t.issued = append(t.issued, m)
	return "tok" + string(rune('0'+len(t.issued))), nil
}

type obs struct{ scripts, assets []string }

func (o *obs) ScriptServed(m Machine, _ string) { o.scripts = append(o.scripts, m.ID) }
func (o *obs) AssetServed(name, _ string, status int, n int64, _ time.Duration) {
	o.assets = append(o.assets, name+":"+http.StatusText(status))
}

func newHandler(t *testing.T, cfg Config) (*Handler, *tokens, *obs) {
	t.Helper()
	if cfg.PublicURL == nil {
		cfg.PublicURL, _ = url.Parse("http://10.99.0.1:8080")
	}
	if cfg.Agent.Kernel == "" {
		cfg.Agent = Agent{Kernel: "vmlinuz", Initrd: "initrd.img", Cmdline: "console=ttyS0"}
	}
	tk, o := &tokens{}, &obs{}
	h, err := New(cfg, Deps{
		Inventory: inv{
			"52:54:00:99:00:11": {ID: "ms1-c1n1", Profile: "agent"},
			"52:54:00:99:00:12": {ID: "ms1-c1n2", Profile: "local"},
			"52:54:00:99:00:13": {ID: "ms1-c1n3", Profile: "custom", WorkerGroup: "win"},
		},
		Tokens: tk, Observer: o, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, tk, o
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestScripts(t *testing.T) {
	h, tk, o := newHandler(t, Config{Profiles: map[string]string{"custom": "#!ipxe\necho {{.Machine.WorkerGroup}} {{.MAC}}\n"}})
	cases := []struct {
		path   string
		status int
		want   []string
		not    []string
	}{
		{"/boot/52:54:00:99:00:11.ipxe", 200, []string{"#!ipxe", "kernel http://10.99.0.1:8080/boot/assets/vmlinuz initrd=initrd.img imaged.server=http://10.99.0.1:8080 imaged.token=tok1 imaged.mac=52:54:00:99:00:11 console=ttyS0", "initrd http://10.99.0.1:8080/boot/assets/initrd.img", "boot"}, nil},
		{"/boot/52-54-00-99-00-12.ipxe", 200, []string{"sanboot --no-describe --drive 0x80", "iseq ${platform} efi && exit"}, []string{"kernel", "token"}},
		{"/boot/525400990013.ipxe", 200, []string{"echo win 52:54:00:99:00:13"}, nil},
		{"/boot/52:54:00:99:00:99.ipxe", 404, nil, nil},
		{"/boot/zz.ipxe", 400, nil, nil},
	}
	for _, c := range cases {
		w := get(t, h, c.path)
		if w.Code != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.path, w.Code, c.status, w.Body)
			continue
		}
		for _, s := range c.want {
			if !strings.Contains(w.Body.String(), s) {
				t.Errorf("%s: script lacks %q:\n%s", c.path, s, w.Body)
			}
		}
		for _, s := range c.not {
			if strings.Contains(w.Body.String(), s) {
				t.Errorf("%s: script has %q", c.path, s)
			}
		}
	}
	if len(tk.issued) != 1 || tk.issued[0].ID != "ms1-c1n1" {
		t.Errorf("tokens issued for %v; want only the agent profile's machine", tk.issued)
	}
	if strings.Join(o.scripts, ",") != "ms1-c1n1,ms1-c1n2,ms1-c1n3" {
		t.Errorf("observed %v", o.scripts)
	}
}

// TestScriptRefusedWithoutToken: when the token source refuses the client (it does not hold the
// address imaged leased to the MAC), the script is refused with 403, names no token, and the
// address the request came from is what the token source was asked about.
func TestScriptRefusedWithoutToken(t *testing.T) {
	h, tk, o := newHandler(t, Config{})
	tk.refuse = true
	r := httptest.NewRequest("GET", "/boot/52:54:00:99:00:11.ipxe", nil)
	r.RemoteAddr = "10.99.0.66:40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "imaged.token") {
		t.Fatalf("refused token: %d %s", w.Code, w.Body)
	}
	if len(tk.from) != 1 || tk.from[0] != netip.MustParseAddr("10.99.0.66") {
		t.Errorf("token asked for %v", tk.from)
	}
	if len(o.scripts) != 0 {
		t.Errorf("a refused script was observed as served: %v", o.scripts)
	}
}

func TestUnknownProfileForUnknownMACs(t *testing.T) {
	h, tk, _ := newHandler(t, Config{UnknownProfile: "agent"})
	w := get(t, h, "/boot/02:00:00:00:00:01.ipxe")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "imaged.mac=02:00:00:00:00:01") || len(tk.issued) != 1 {
		t.Fatalf("unknown MAC with discovery: %d %s", w.Code, w.Body)
	}
}

func TestAssetsRangeAndConfinement(t *testing.T) {
	dir1, dir2, outside := t.TempDir(), t.TempDir(), t.TempDir()
	data := make([]byte, 3<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(dir1, "vmlinuz"), data, 0o644)
	os.WriteFile(filepath.Join(dir2, "ipxe.efi"), []byte("efi"), 0o644)
	os.WriteFile(filepath.Join(dir2, "vmlinuz"), []byte("shadowed"), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir1, "escape"))
	os.Symlink("vmlinuz", filepath.Join(dir1, "alias"))
	h, _, o := newHandler(t, Config{Roots: []string{dir1, dir2}})

	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/boot/assets/vmlinuz", nil)
	req.Header.Set("Range", "bytes=1048576-1048675")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(body, data[1<<20:1<<20+100]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
	for path, want := range map[string]int{
		"/boot/assets/ipxe.efi":          200,
		"/boot/assets/alias":             200,
		"/boot/assets/escape":            403,
		"/boot/assets/../boot.go":        403,
		"/boot/assets/missing":           404,
		"/boot/assets/":                  404,
		"/boot/assets/%2e%2e/etc/passwd": 403,
	} {
		if w := get(t, h, path); w.Code != want {
			t.Errorf("%s: %d, want %d", path, w.Code, want)
		} else if path == "/boot/assets/ipxe.efi" && w.Body.String() != "efi" {
			t.Errorf("second root not used: %q", w.Body)
		}
	}
	w := get(t, h, "/boot/assets/vmlinuz")
	if !bytes.Equal(w.Body.Bytes(), data) {
		t.Error("the first root must win")
	}
	if o.assets[0] != "vmlinuz:Partial Content" {
		t.Errorf("observed %v", o.assets)
	}
}

// A FIFO in the assets directory: opening it for reading blocked until a writer came, so each GET
// for it held a handler (and its connection) for good. Now only regular files are served: the
// FIFO, a directory or a device is refused at once with 403, logged and counted, and the regular
// file beside it is served.
func TestAssetsServeRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("efi"), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	var logs bytes.Buffer
	h, _, o := newHandler(t, Config{Roots: []string{dir}})
	h.deps.Log = slog.New(slog.NewTextHandler(&logs, nil))
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/boot/assets/fifo", 403},
		{"/boot/assets/sub", 403},
		{"/boot/assets/ipxe.efi", 200},
	} {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- get(t, h, tc.path) }()
		select {
		case w := <-done:
			if w.Code != tc.want {
				t.Errorf("%s: %d, want %d", tc.path, w.Code, tc.want)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s: no answer within 3s", tc.path)
			// Unblock the handler stuck in open(2) on the FIFO, so the test can end.
			if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
			<-done
		}
	}
	if got := strings.Join(o.assets, " "); got != "fifo:Forbidden sub:Forbidden ipxe.efi:OK" {
		t.Errorf("observed %s", got)
	}
	if got := testutil.ToFloat64(h.metrics.assets.WithLabelValues("Forbidden")); got != 2 {
		t.Errorf(`asset_requests_total{status="Forbidden"} = %v, want 2`, got)
	}
	if n := strings.Count(logs.String(), "boot asset refused"); n != 2 || !strings.Contains(logs.String(), "not a regular file") {
		t.Errorf("want two Warn lines naming a file that is not regular, got %q", logs.String())
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:99:00:11", "525400990011", "52-54-00-99-00-11", "zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := ParseMAC(s)
		if err == nil && len(mac) != 6 {
			t.Fatalf("%q gave %v", s, mac)
		}
	})
}

// With an HTTPS listener the agent is sent there with the certificate's pin; a script fetched
// over plain HTTP (Debian's iPXE has no TLS) keeps its kernel and initramfs there, one fetched
// over HTTPS (an iPXE built to trust imaged) gets them over HTTPS too.
func TestScriptsWithTLS(t *testing.T) {
	httpsURL, _ := url.Parse("https://10.99.0.1:8443")
	const pin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	h, _, _ := newHandler(t, Config{HTTPSURL: httpsURL, TLSPin: pin})
	plain := get(t, h, "/boot/52:54:00:99:00:11.ipxe").Body.String()
	want := "kernel http://10.99.0.1:8080/boot/assets/vmlinuz initrd=initrd.img imaged.server=https://10.99.0.1:8443 imaged.tls_sha256=" + pin + " imaged.token=tok1 "
	if !strings.Contains(plain, want) || !strings.Contains(plain, "initrd http://10.99.0.1:8080/boot/assets/initrd.img") {
		t.Errorf("script over plain HTTP:\n%s\nwant a line with %s", plain, want)
	}
	r := httptest.NewRequest("GET", "https://10.99.0.1:8443/boot/52:54:00:99:00:11.ipxe", nil) // r.TLS is set
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if s := w.Body.String(); !strings.Contains(s, "kernel https://10.99.0.1:8443/boot/assets/vmlinuz ") || !strings.Contains(s, "initrd https://10.99.0.1:8443/boot/assets/initrd.img") ||
		!strings.Contains(s, "imaged.tls_sha256="+pin) {
		t.Errorf("script over HTTPS:\n%s", s)
	}
}
