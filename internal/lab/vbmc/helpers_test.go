package vbmc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

const (
	testUser = "admin"
	testPass = "s3cret-pass"
)

// fakeBlade is a Blade without QEMU that records what the BMC asked of it.
type fakeBlade struct {
	id      string
	mac     net.HardwareAddr
	console string

	mu         sync.Mutex
	state      vbmc.PowerState
	calls      []string
	boots      []vbmc.Boot
	ignoreACPI bool  // GracefulShutdown waits for its context, as with a guest that has no OS
	failOn     error // PowerOn fails with this
	shutdowns  chan error
}

func newFake(id, mac string) *fakeBlade {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return &fakeBlade{id: id, mac: hw, state: vbmc.StateOff, shutdowns: make(chan error, 16)}
}

func (f *fakeBlade) ID() string            { return f.id }
func (f *fakeBlade) MAC() net.HardwareAddr { return f.mac }
func (f *fakeBlade) ConsolePath() string   { return f.console }

func (f *fakeBlade) PowerState() vbmc.PowerState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeBlade) setState(s vbmc.PowerState) {
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
}

func (f *fakeBlade) record(call string) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
}

func (f *fakeBlade) PowerOn(ctx context.Context, b vbmc.Boot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := fmt.Sprintf("PowerOn(%s", b.Source)
	if b.Persistent {
		call += ",persistent"
	}
	f.calls = append(f.calls, call+")")
	if f.failOn != nil {
		return f.failOn
	}
	if f.state == vbmc.StateOn {
		return errors.New("fake: PowerOn while on")
	}
	f.boots = append(f.boots, b)
	f.state = vbmc.StateOn
	return nil
}

func (f *fakeBlade) ForceOff(ctx context.Context) error {
	f.record("ForceOff")
	f.setState(vbmc.StateOff)
	return nil
}

func (f *fakeBlade) GracefulShutdown(ctx context.Context) error {
	f.record("GracefulShutdown")
	f.mu.Lock()
	ignore := f.ignoreACPI
	f.mu.Unlock()
	var err error
	if ignore {
		<-ctx.Done()
		err = fmt.Errorf("fake: guest ignored ACPI: %w", ctx.Err())
	} else {
		f.setState(vbmc.StateOff)
	}
	f.shutdowns <- err
	return err
}

func (f *fakeBlade) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBlade) resetCalls() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

// testServer is a Server on 127.0.0.1 at a kernel-chosen port, running until the test ends.
type testServer struct {
	*vbmc.Server
	t      *testing.T
	client *http.Client
}

func baseConfig() vbmc.Config {
	return vbmc.Config{Addr: "127.0.0.1:0", PlainHTTP: true, Username: testUser, Password: testPass}
}

func startServer(t *testing.T, cfg vbmc.Config, blades ...vbmc.Blade) *testServer {
	t.Helper()
	s, err := vbmc.New(cfg, blades, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of cancellation")
		}
	})
	return &testServer{Server: s, t: t, client: &http.Client{Timeout: 10 * time.Second}}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// reply is one HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object (%v): %s", err, r.body)
	}
	return m
}

// auth says how a request authenticates.
type auth struct {
	basic bool
	token string
	user  string
	pass  string
}

var (
	basicAuth = auth{basic: true, user: testUser, pass: testPass}
	noAuth    = auth{}
)

func tokenAuth(tok string) auth { return auth{token: tok} }

// do sends one request; hdr are header name/value pairs.
func (ts *testServer) do(a auth, method, path, body string, hdr ...string) reply {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL()+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case a.token != "":
		req.Header.Set("X-Auth-Token", a.token)
	case a.basic:
		req.SetBasicAuth(a.user, a.pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (ts *testServer) get(path string) map[string]any {
	ts.t.Helper()
	r := ts.do(basicAuth, "GET", path, "")
	if r.status != http.StatusOK {
		ts.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	return r.json(ts.t)
}

// wantError checks a Redfish error envelope: status, and that the first ExtendedInfo message
// has the id (without registry version, e.g. "PropertyNotWritable") and mentions arg.
func wantError(t *testing.T, r reply, status int, id string, arg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Info    []struct {
				MessageID   string `json:"MessageId"`
				Message     string
				MessageArgs []string
				Severity    string
				Resolution  string
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not an error envelope (%v): %s", err, r.body)
	}
	if len(env.Error.Info) == 0 || env.Error.Code == "" || env.Error.Message == "" {
		t.Fatalf("incomplete error envelope: %s", r.body)
	}
	m := env.Error.Info[0]
	parts := strings.Split(m.MessageID, ".")
	if len(parts) != 5 || parts[4] != id {
		t.Fatalf("MessageId %q, want Registry.X.Y.Z.%s: %s", m.MessageID, id, r.body)
	}
	if len(env.Error.Info) == 1 && env.Error.Code != m.MessageID {
		t.Errorf("code %q differs from the one message's id %q", env.Error.Code, m.MessageID)
	}
	if strings.Contains(m.Message, "%") || m.Resolution == "" || m.Severity == "" {
		t.Errorf("message not filled in: %+v", m)
	}
	if arg != "" && !strings.Contains(strings.Join(m.MessageArgs, "|")+"|"+m.Message, arg) {
		t.Errorf("message does not name %q: %+v", arg, m)
	}
}

// path walks a decoded JSON document: path(doc, "Boot", "BootSourceOverrideTarget").
func path(doc any, keys ...string) any {
	for _, k := range keys {
		m, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		doc = m[k]
	}
	return doc
}

// requireTool skips t when an external client under test is missing, naming the Debian
// package; under CI (which installs them) it fails instead.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: CI must install the Debian package %s", name, pkg)
		}
		t.Skipf("skipping: %s not found (apt-get install %s)", name, pkg)
	}
	return p
}

func compact(b []byte) string {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return string(b)
	}
	return out.String()
}
