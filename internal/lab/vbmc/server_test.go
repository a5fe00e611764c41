package vbmc_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

func threeBlades() []*fakeBlade {
	return []*fakeBlade{
		newFake("ms1-c1n1", "52:54:00:99:00:11"),
		newFake("ms1-c1n2", "52:54:00:99:00:12"),
		newFake("ms1-c1n3", "52:54:00:99:00:13"),
	}
}

func blades(fs []*fakeBlade) []vbmc.Blade {
	out := make([]vbmc.Blade, len(fs))
	for i, f := range fs {
		out[i] = f
	}
	return out
}

func TestServiceRootIsOpen(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)

	r := ts.do(noAuth, "GET", "/redfish", "")
	if r.status != 200 || compact(r.body) != `{"v1":"/redfish/v1/"}` {
		t.Fatalf("GET /redfish: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/redfish/v1/", "/redfish/v1"} {
		r := ts.do(noAuth, "GET", p, "")
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", p, r.status, r.body)
		}
		root := r.json(t)
		for k, want := range map[string]any{
			"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot", "Vendor": "imaged",
			"Systems": map[string]any{"@odata.id": "/redfish/v1/Systems"}, "Managers": map[string]any{"@odata.id": "/redfish/v1/Managers"},
			"Chassis": map[string]any{"@odata.id": "/redfish/v1/Chassis"}, "SessionService": map[string]any{"@odata.id": "/redfish/v1/SessionService"},
			"Links": map[string]any{"Sessions": map[string]any{"@odata.id": "/redfish/v1/SessionService/Sessions"}},
		} {
			if diff := cmp.Diff(want, root[k]); diff != "" {
				t.Errorf("service root %s (-want +got):\n%s", k, diff)
			}
		}
		if r.header.Get("OData-Version") != "4.0" || r.header.Get("ETag") == "" || root["@odata.etag"] != r.header.Get("ETag") {
			t.Errorf("headers %v, @odata.etag %v", r.header, root["@odata.etag"])
		}
	}
	if r := ts.do(noAuth, "GET", "/redfish/v1/odata", ""); r.status != 200 || !strings.Contains(string(r.body), `"url": "/redfish/v1/Systems"`) {
		t.Errorf("odata service document: %d %s", r.status, r.body)
	}
}

func TestAuthenticationRequired(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)
	paths := []string{
		"/redfish/v1/Systems", "/redfish/v1/Systems/ms1-c1n1", "/redfish/v1/Systems/ms1-c1n1/EthernetInterfaces",
		"/redfish/v1/Systems/ms1-c1n1/Oem/Imaged/ConsoleLog", "/redfish/v1/Managers", "/redfish/v1/Managers/ms1",
		"/redfish/v1/Chassis/ms1", "/redfish/v1/SessionService", "/redfish/v1/SessionService/Sessions",
		"/redfish/v1/Systems/no-such-system", "/redfish/v1/no/such/thing",
	}
	for _, a := range []auth{noAuth, {basic: true, user: testUser, pass: "wrong"}, {basic: true, user: "root", pass: testPass}, tokenAuth("not-a-token")} {
		for _, p := range paths {
			r := ts.do(a, "GET", p, "")
			wantError(t, r, http.StatusUnauthorized, "NoValidSession", "")
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("GET %s: 401 without WWW-Authenticate: %v", p, r.header)
			}
		}
	}
	for _, act := range []struct{ method, path, body string }{
		{"PATCH", "/redfish/v1/Systems/ms1-c1n1", `{"Boot":{"BootSourceOverrideEnabled":"Once"}}`},
		{"POST", "/redfish/v1/Systems/ms1-c1n1/Actions/ComputerSystem.Reset", `{"ResetType":"On"}`},
	} {
		wantError(t, ts.do(noAuth, act.method, act.path, act.body), http.StatusUnauthorized, "NoValidSession", "")
	}
	if r := ts.do(basicAuth, "GET", "/redfish/v1/Systems", ""); r.status != 200 {
		t.Errorf("basic auth refused: %d %s", r.status, r.body)
	}
}

func login(t *testing.T, ts *testServer) (token, location string) {
	t.Helper()
	r := ts.do(noAuth, "POST", "/redfish/v1/SessionService/Sessions", fmt.Sprintf(`{"UserName":%q,"Password":%q}`, testUser, testPass))
	if r.status != http.StatusCreated {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	token, location = r.header.Get("X-Auth-Token"), r.header.Get("Location")
	if token == "" || !strings.HasPrefix(location, "/redfish/v1/SessionService/Sessions/") {
		t.Fatalf("login headers: %v", r.header)
	}
	doc := r.json(t)
	if doc["@odata.id"] != location || doc["UserName"] != testUser || strings.Contains(string(r.body), token) {
		t.Fatalf("session resource: %s", r.body)
	}
	return token, location
}

func TestSessionLifecycle(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)
	tok, loc := login(t, ts)

	if r := ts.do(tokenAuth(tok), "GET", "/redfish/v1/Systems", ""); r.status != 200 {
		t.Fatalf("GET with token: %d %s", r.status, r.body)
	}
	coll := ts.do(tokenAuth(tok), "GET", "/redfish/v1/SessionService/Sessions", "").json(t)
	if diff := cmp.Diff([]any{map[string]any{"@odata.id": loc}}, coll["Members"]); diff != "" || coll["Members@odata.count"] != 1.0 {
		t.Errorf("sessions collection (-want +got):\n%s count %v", diff, coll["Members@odata.count"])
	}
	svc := ts.get("/redfish/v1/SessionService")
	if svc["SessionTimeout"] != 1800.0 || path(svc, "Sessions", "@odata.id") != "/redfish/v1/SessionService/Sessions" {
		t.Errorf("session service: %v", svc)
	}
	if r := ts.do(tokenAuth(tok), "GET", loc, ""); r.status != 200 {
		t.Errorf("GET own session: %d %s", r.status, r.body)
	}
	if r := ts.do(tokenAuth(tok), "DELETE", loc, ""); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	wantError(t, ts.do(tokenAuth(tok), "GET", "/redfish/v1/Systems", ""), 401, "NoValidSession", "")
	wantError(t, ts.do(basicAuth, "DELETE", loc, ""), 404, "ResourceMissingAtURI", loc)

	// Bad logins.
	wantError(t, ts.do(noAuth, "POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin","Password":"nope"}`), 401, "NoValidSession", "")
	wantError(t, ts.do(noAuth, "POST", "/redfish/v1/SessionService/Sessions", `{"UserName":"admin"}`), 400, "PropertyMissing", "Password")
	wantError(t, ts.do(noAuth, "POST", "/redfish/v1/SessionService/Sessions", `{"UserName":`), 400, "MalformedJSON", "")
	if n := ts.get("/redfish/v1/SessionService/Sessions")["Members@odata.count"]; n != 0.0 {
		t.Errorf("sessions left after logout and failed logins: %v", n)
	}
}

// The session table is bounded (16 by default, like common BMCs); the 17th login is refused
// with 503 rather than evicting a live session.
func TestSessionTableBound(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)
	var locs, toks []string
	for range 16 {
		tok, loc := login(t, ts)
		toks, locs = append(toks, tok), append(locs, loc)
	}
	r := ts.do(noAuth, "POST", "/redfish/v1/SessionService/Sessions", fmt.Sprintf(`{"UserName":%q,"Password":%q}`, testUser, testPass))
	wantError(t, r, http.StatusServiceUnavailable, "SessionLimitExceeded", "")
	if r.header.Get("X-Auth-Token") != "" {
		t.Error("refused login got a token")
	}
	for _, tok := range toks { // nobody was evicted
		if r := ts.do(tokenAuth(tok), "GET", "/redfish/v1/Systems", ""); r.status != 200 {
			t.Fatalf("session evicted: %d", r.status)
		}
	}
	if r := ts.do(tokenAuth(toks[0]), "DELETE", locs[0], ""); r.status != 204 {
		t.Fatal(r.status)
	}
	login(t, ts)
}

func TestSystemsCollectionAndSystem(t *testing.T) {
	fs := threeBlades()
	fs[1].setState(vbmc.StateOn)
	ts := startServer(t, baseConfig(), blades(fs)...)

	coll := ts.get("/redfish/v1/Systems")
	want := []any{
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n1"},
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n2"},
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n3"},
	}
	if diff := cmp.Diff(want, coll["Members"]); diff != "" {
		t.Errorf("Members (-want +got):\n%s", diff)
	}
	if coll["Members@odata.count"] != 3.0 || coll["@odata.type"] != "#ComputerSystemCollection.ComputerSystemCollection" {
		t.Errorf("collection: %v", coll)
	}

	for i, f := range fs {
		sys := ts.get("/redfish/v1/Systems/" + f.id + "/") // a trailing slash is tolerated
		if sys["Id"] != f.id || sys["@odata.id"] != "/redfish/v1/Systems/"+f.id {
			t.Errorf("system %d: %v", i, sys)
		}
		wantState, wantStatus := "Off", "StandbyOffline"
		if i == 1 {
			wantState, wantStatus = "On", "Enabled"
		}
		if sys["PowerState"] != wantState || path(sys, "Status", "State") != wantStatus || path(sys, "Status", "Health") != "OK" {
			t.Errorf("%s: PowerState %v Status %v", f.id, sys["PowerState"], sys["Status"])
		}
		boot := sys["Boot"]
		for k, want := range map[string]any{
			"BootSourceOverrideEnabled":                        "Disabled",
			"BootSourceOverrideTarget":                         "None",
			"BootSourceOverrideTarget@Redfish.AllowableValues": []any{"None", "Pxe", "Hdd", "UefiHttp"},
			"BootSourceOverrideMode":                           "UEFI",
			"HttpBootUri":                                      nil,
		} {
			if diff := cmp.Diff(want, path(boot, k)); diff != "" {
				t.Errorf("%s Boot.%s (-want +got):\n%s", f.id, k, diff)
			}
		}
		reset := path(sys, "Actions", "#ComputerSystem.Reset")
		if path(reset, "target") != "/redfish/v1/Systems/"+f.id+"/Actions/ComputerSystem.Reset" {
			t.Errorf("reset target: %v", reset)
		}
		if diff := cmp.Diff([]any{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"},
			path(reset, "ResetType@Redfish.AllowableValues")); diff != "" {
			t.Errorf("reset types (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]any{
			"Chassis":   []any{map[string]any{"@odata.id": "/redfish/v1/Chassis/ms1"}},
			"ManagedBy": []any{map[string]any{"@odata.id": "/redfish/v1/Managers/ms1"}},
		}, sys["Links"]); diff != "" {
			t.Errorf("Links (-want +got):\n%s", diff)
		}
		if path(sys, "Oem", "Imaged", "ConsoleLog") != "/redfish/v1/Systems/"+f.id+"/Oem/Imaged/ConsoleLog" {
			t.Errorf("Oem: %v", sys["Oem"])
		}

		nics := ts.get(path(sys, "EthernetInterfaces", "@odata.id").(string))
		if nics["Members@odata.count"] != 1.0 {
			t.Fatalf("NICs: %v", nics)
		}
		nic := ts.get(path(nics, "Members").([]any)[0].(map[string]any)["@odata.id"].(string))
		mac := strings.ToUpper(f.mac.String())
		if nic["MACAddress"] != mac || nic["PermanentMACAddress"] != mac {
			t.Errorf("NIC of %s: %v, want %s", f.id, nic, mac)
		}
	}
	wantError(t, ts.do(basicAuth, "GET", "/redfish/v1/Systems/ms1-c9n9", ""), 404, "ResourceMissingAtURI", "/redfish/v1/Systems/ms1-c9n9")
	wantError(t, ts.do(basicAuth, "GET", "/redfish/v1/Systems/ms1-c1n1/EthernetInterfaces/NIC9", ""), 404, "ResourceMissingAtURI", "")
}

func TestManagerAndChassis(t *testing.T) {
	cfg := baseConfig()
	cfg.FirmwareVersion = "imaged 1.2.3"
	ts := startServer(t, cfg, blades(threeBlades())...)
	systems := []any{
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n1"},
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n2"},
		map[string]any{"@odata.id": "/redfish/v1/Systems/ms1-c1n3"},
	}
	if c := ts.get("/redfish/v1/Managers"); c["Members@odata.count"] != 1.0 || path(c, "Members").([]any)[0].(map[string]any)["@odata.id"] != "/redfish/v1/Managers/ms1" {
		t.Errorf("managers: %v", c)
	}
	m := ts.get("/redfish/v1/Managers/ms1")
	if m["ManagerType"] != "EnclosureManager" || m["FirmwareVersion"] != "imaged 1.2.3" {
		t.Errorf("manager: %v", m)
	}
	if diff := cmp.Diff(systems, path(m, "Links", "ManagerForServers")); diff != "" {
		t.Errorf("ManagerForServers (-want +got):\n%s", diff)
	}
	if c := ts.get("/redfish/v1/Chassis"); c["Members@odata.count"] != 1.0 {
		t.Errorf("chassis collection: %v", c)
	}
	ch := ts.get("/redfish/v1/Chassis/ms1")
	if diff := cmp.Diff(systems, path(ch, "Links", "ComputerSystems")); diff != "" {
		t.Errorf("chassis ComputerSystems (-want +got):\n%s", diff)
	}
	wantError(t, ts.do(basicAuth, "GET", "/redfish/v1/Managers/ms2", ""), 404, "ResourceMissingAtURI", "")
}

func TestMethodNotAllowed(t *testing.T) {
	ts := startServer(t, baseConfig(), blades(threeBlades())...)
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", "/redfish/v1/Systems", "GET, HEAD"},
		{"POST", "/redfish/v1/Systems/ms1-c1n1", "GET, HEAD, PATCH"},
		{"GET", "/redfish/v1/Systems/ms1-c1n1/Actions/ComputerSystem.Reset", "POST"},
		{"PATCH", "/redfish/v1/Managers/ms1", "GET, HEAD"},
		{"PUT", "/redfish/v1/", "GET, HEAD"},
	} {
		r := ts.do(basicAuth, c.method, c.path, "")
		wantError(t, r, http.StatusMethodNotAllowed, "OperationNotAllowed", "")
		if r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, r.header.Get("Allow"), c.allow)
		}
	}
	if r := ts.do(basicAuth, "HEAD", "/redfish/v1/Systems", ""); r.status != 200 || len(r.body) != 0 {
		t.Errorf("HEAD: %d %q", r.status, r.body)
	}
}

func TestNewValidates(t *testing.T) {
	f := newFake("ms1-c1n1", "52:54:00:99:00:11")
	for name, c := range map[string]struct {
		cfg    func(*vbmc.Config)
		blades []vbmc.Blade
		want   string
	}{
		"no password":    {func(c *vbmc.Config) { c.Password = "" }, nil, "username and password"},
		"no certificate": {func(c *vbmc.Config) { c.PlainHTTP = false }, nil, "certificate and key are required"},
		"bad address":    {func(c *vbmc.Config) { c.Addr = "127.0.0.1:99999" }, nil, "listen"},
		"missing cert file": {func(c *vbmc.Config) {
			c.PlainHTTP, c.CertFile, c.KeyFile = false, "/nonexistent.pem", "/nonexistent.key"
		}, nil, "TLS certificate"},
		"short timeout":   {func(c *vbmc.Config) { c.SessionTimeout = 5e9 }, nil, "outside 30s..24h"},
		"duplicate blade": {func(*vbmc.Config) {}, []vbmc.Blade{f, f}, "appears twice"},
		"bad blade id":    {func(*vbmc.Config) {}, []vbmc.Blade{newFake("a/b", "52:54:00:00:00:01")}, "not a URL path segment"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig()
			c.cfg(&cfg)
			_, err := vbmc.New(cfg, c.blades, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
	s, err := vbmc.New(vbmc.Config{PlainHTTP: true, Username: "u", Password: "p"}, nil, nil)
	if err != nil || s.URL() != "" || s.Handler() == nil {
		t.Fatalf("handler-only server: %v %q", err, s.URL())
	}
	if err := s.Run(t.Context()); err == nil {
		t.Error("Run without a listener succeeded")
	}
}
