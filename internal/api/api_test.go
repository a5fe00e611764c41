package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

func newServer(t testing.TB) (http.Handler, *inventory.Inventory) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SyncMachines([]machines.Machine{{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}, Boot: "agent"}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	inv, err := inventory.New(st, inventory.Config{Log: log, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), PublicURL: u, Log: log}).Register(mux)
	return Authenticate(AuthConfig{AnonymousRead: true}, mux), inv
}

// testRemote is the address httptest.NewRequest gives a request.
var testRemote = netip.MustParseAddr("192.0.2.1")

// issue is a boot script served to machine id's MAC, fetched from testRemote.
func issue(t testing.TB, inv *inventory.Inventory, id, mac string) string {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	tok, err := inv.IssueToken(inventory.TokenRequest{Machine: id, MAC: hw, Profile: "agent", Remote: testRemote})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func post(mux http.Handler, path, ctype, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func TestHelloBadInput(t *testing.T) {
	mux, inv := newServer(t)
	tok := issue(t, inv, "ms1-c1n1", "52:54:00:99:00:11")
	cases := []struct {
		name, ctype, body string
		status            int
		field, msg        string
	}{
		{"empty", "application/json", "", 400, "", "empty"},
		{"not json", "application/json", "{mac:", 400, "", "not valid JSON"},
		{"wrong type", "application/json", `{"mac": 5, "token": "x"}`, 400, "mac", "must be a string"},
		{"unknown field", "application/json", `{"mac": "52:54:00:99:00:11", "token": "x", "colour": 1}`, 400, "colour", "unknown field"},
		{"bad mac", "application/json", `{"mac": "52:54", "token": "x"}`, 400, "mac", "not an Ethernet MAC"},
		{"no token", "application/json", `{"mac": "52:54:00:99:00:11"}`, 400, "token", "required"},
		// The agent's address comes from the connection, never from the body (a hello naming
		// another machine's address must not take it over).
		{"ip in the body", "application/json", `{"mac": "52:54:00:99:00:11", "token": "x", "ip": "10.99.0.12"}`, 400, "ip", "unknown field"},
		{"trailing", "application/json", `{"mac": "52:54:00:99:00:11", "token": "x"} {}`, 400, "", "extra data"},
		{"oversized", "application/json", `{"mac": "` + strings.Repeat("a", 70000) + `"}`, 413, "", "larger than"},
		{"not json type", "text/plain", `{}`, 415, "", "must be JSON"},
		{"wrong token", "application/json", `{"mac": "52:54:00:99:00:11", "token": "deadbeef"}`, 403, "token", "not valid"},
		{"ok", "", `{"mac": "52:54:00:99:00:11", "token": "` + tok + `"}`, 200, "", ""},
	}
	for _, c := range cases {
		w := post(mux, "/agent/v1/hello", c.ctype, c.body)
		if w.Code != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, w.Code, c.status, w.Body)
			continue
		}
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s: not JSON: %s", c.name, w.Header().Get("Content-Type"))
		}
		if c.status == 200 {
			continue
		}
		var e Error
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Errorf("%s: body is not a JSON error: %s", c.name, w.Body)
			continue
		}
		if e.Field != c.field || !strings.Contains(e.Error, c.msg) {
			t.Errorf("%s: got %+v, want field %q and %q", c.name, e, c.field, c.msg)
		}
	}
}

func TestHelloTokenExpires(t *testing.T) {
	st, _ := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	defer st.Close()
	st.SyncMachines([]machines.Machine{{ID: "m", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}}})
	inv, _ := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Millisecond})
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	tok := issue(t, inv, "m", mac.String())
	time.Sleep(5 * time.Millisecond)
	if _, _, err := inv.Hello(inventory.HelloRequest{MAC: mac, Token: tok, Remote: testRemote}); err != inventory.ErrBadToken {
		t.Errorf("expired token: %v", err)
	}
}

func TestReadEndpoints(t *testing.T) {
	mux, _ := newServer(t)
	for path, want := range map[string]int{
		"/api/v1/machines":                         200,
		"/api/v1/machines/ms1-c1n1":                200,
		"/api/v1/machines/nope":                    404,
		"/api/v1/machines/ms1-c1n1/events":         200,
		"/api/v1/machines/ms1-c1n1/events?after=x": 400,
		"/api/v1/unknown-clients":                  200,
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != want {
			t.Errorf("%s: %d, want %d: %s", path, w.Code, want, w.Body)
		}
	}
}

func FuzzHello(f *testing.F) {
	mux, _ := newServer(f)
	f.Add(`{"mac": "52:54:00:99:00:11", "token": "x"}`)
	f.Add(`{"mac": 1}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		w := post(mux, "/agent/v1/hello", "application/json", body)
		if w.Code == 200 || w.Code >= 500 {
			t.Fatalf("%q: %d %s", body, w.Code, w.Body)
		}
		var e Error
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Fatalf("%q: not a JSON error: %s", body, w.Body)
		}
	})
}
