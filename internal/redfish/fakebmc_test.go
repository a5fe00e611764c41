package redfish

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rules are what a fake BMC enforces, as the firmware it imitates does.
type rules struct {
	sessions            bool // has a SessionService; without one, basic auth is the only login
	basicAuth           bool // accepts Authorization: Basic
	loginStatus         int  // if set, POST to the sessions collection answers this status
	trailingSlash308    bool // iLO 5 < 1.40: 308 to a URI without a trailing slash
	modeWriteStatus     int  // if set, a PATCH writing BootSourceOverrideMode answers this (iLO)
	requireIfMatch      bool // PATCH without If-Match: 428
	rejectIfMatchOnPost bool // POST with If-Match: 400
	envelope            int  // 0: success is 204; else the iLO success envelope with this status
	successID           string
	transitionReads     int // GETs of a system during which a power transition is in progress
	bootReads           int // GETs of a system that still show the old boot override after a PATCH
}

// The fakes of the firmware in testdata.
var (
	ilo4Rules = rules{sessions: true, basicAuth: true, modeWriteStatus: 400, rejectIfMatchOnPost: true,
		envelope: 400, successID: "Base.0.10.Success", transitionReads: 2, bootReads: 1}
	ilo5v130Rules = rules{sessions: true, basicAuth: true, trailingSlash308: true, modeWriteStatus: 400,
		requireIfMatch: true, rejectIfMatchOnPost: true, envelope: 200, successID: "Base.1.4.Success", transitionReads: 3}
	ilo5v272Rules = rules{sessions: true, basicAuth: true, modeWriteStatus: 405, requireIfMatch: true,
		rejectIfMatchOnPost: true, envelope: 200, successID: "Base.1.4.Success", transitionReads: 3, bootReads: 2}
	moonshotRules = rules{basicAuth: true, modeWriteStatus: 400, rejectIfMatchOnPost: true, envelope: 200,
		successID: "Base.0.10.Success", transitionReads: 2}
)

const (
	testUser = "Administrator"
	testPass = "pw-Zq8#kVt2!sEcReT" // searched for in logs and errors
)

// fakeBMC is a Redfish service made from recorded-shape JSON that enforces the rules of the
// firmware it imitates. Power transitions and boot override writes advance with reads, not time.
type fakeBMC struct {
	t     testing.TB
	rules rules

	// hook, if set, sees every request first; it returns true when it answered. It runs
	// without the lock, so it may block (honouring r.Context()).
	hook func(w http.ResponseWriter, r *http.Request) bool

	mu       sync.Mutex
	res      map[string]map[string]any // by path, with trailing slash
	password string
	tokens   map[string]string // token → session path
	issued   []string          // every token handed out
	nSession int
	version  map[string]int      // system path → ETag version
	phases   map[string][]string // system path → power states still to be shown
	stale    map[string]stale    // system path → old Boot still shown
	resets   map[string]string   // reset target → system path
	counts   map[string]int
	log      []string
}

type stale struct {
	boot  any
	reads int
}

func newFake(t testing.TB, fixture string, r rules) *fakeBMC {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBMC{t: t, rules: r, password: testPass, tokens: map[string]string{},
		version: map[string]int{}, phases: map[string][]string{}, stale: map[string]stale{},
		resets: map[string]string{}, counts: map[string]int{}}
	if err := json.Unmarshal(b, &f.res); err != nil {
		t.Fatalf("%s: %v", fixture, err)
	}
	for p, doc := range f.res {
		if _, ok := doc["PowerState"]; ok {
			f.resets[resetTarget(doc)] = p
		}
	}
	if !r.sessions {
		root := f.res["/redfish/v1/"]
		delete(root, "SessionService")
		delete(root, "Links")
	}
	return f
}

func resetTarget(doc map[string]any) string {
	a, _ := doc["Actions"].(map[string]any)
	rs, _ := a["#ComputerSystem.Reset"].(map[string]any)
	t, _ := rs["target"].(string)
	return t
}

// system returns the resource at p (a system) for a test to inspect or change.
func (f *fakeBMC) system(p string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.res[p]
}

func (f *fakeBMC) setSystem(p, key string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res[p][key] = v
	f.version[p]++
}

func (f *fakeBMC) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[key]
}

func (f *fakeBMC) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// expireSessions forgets every session, as a BMC reboot or session timeout does.
func (f *fakeBMC) expireSessions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

func (f *fakeBMC) etag(p string) string {
	return fmt.Sprintf(`W/"%08X"`, crc32.ChecksumIEEE([]byte(p))+uint32(f.version[p]))
}

func (f *fakeBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.hook != nil && f.hook(w, r) {
		f.mu.Lock()
		f.log = append(f.log, r.Method+" "+r.URL.Path+" hooked")
		f.mu.Unlock()
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	f.serve(rec, r, body)
	f.counts[r.Method+" "+r.URL.Path]++
	f.log = append(f.log, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, rec.status))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (f *fakeBMC) serve(w http.ResponseWriter, r *http.Request, body []byte) {
	p := r.URL.Path
	if !strings.HasSuffix(p, "/") {
		if f.rules.trailingSlash308 {
			f.counts["308"]++
			w.Header().Set("Location", p+"/")
			w.WriteHeader(http.StatusPermanentRedirect)
			return
		}
		p += "/"
	}
	sessions := "/redfish/v1/SessionService/Sessions/"
	switch {
	case r.Method == http.MethodGet && p == "/redfish/v1/":
		// The service root is readable without credentials.
	case r.Method == http.MethodPost && p == sessions && f.rules.sessions:
		f.login(w, r, body)
		return
	default:
		if !f.authorized(r) {
			f.counts["401"]++
			f.fail(w, http.StatusUnauthorized, "Base.1.4.NoValidSession", "")
			return
		}
	}
	switch r.Method {
	case http.MethodGet:
		f.get(w, p)
	case http.MethodPatch:
		f.patch(w, r, p, body)
	case http.MethodPost:
		f.post(w, r, p, body)
	case http.MethodDelete:
		if tok := r.Header.Get("X-Auth-Token"); f.tokens[tok] == p {
			delete(f.tokens, tok)
			f.counts["logout"]++
			w.WriteHeader(http.StatusNoContent)
			return
		}
		f.fail(w, http.StatusMethodNotAllowed, "Base.1.4.OperationNotAllowed", "")
	default:
		f.fail(w, http.StatusMethodNotAllowed, "Base.1.4.OperationNotAllowed", "")
	}
}

func (f *fakeBMC) authorized(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		_, ok := f.tokens[tok]
		return ok
	}
	u, pw, ok := r.BasicAuth()
	return ok && f.rules.basicAuth && u == testUser && pw == f.password
}

func (f *fakeBMC) login(w http.ResponseWriter, r *http.Request, body []byte) {
	f.counts["login"]++
	if f.rules.loginStatus != 0 {
		f.fail(w, f.rules.loginStatus, "Base.1.4.OperationNotAllowed", "")
		return
	}
	var c struct{ UserName, Password string }
	if json.Unmarshal(body, &c) != nil || c.UserName != testUser || c.Password != f.password {
		f.counts["login401"]++
		f.fail(w, http.StatusUnauthorized, "Base.1.4.NoValidSession", "Invalid login")
		return
	}
	f.nSession++
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	p := fmt.Sprintf("/redfish/v1/SessionService/Sessions/%s%07x/", strings.ToLower(testUser), f.nSession)
	f.tokens[token] = p
	f.issued = append(f.issued, token)
	w.Header().Set("X-Auth-Token", token)
	// iLO gives an absolute Location, with its own idea of its address.
	w.Header().Set("Location", "https://16.1.15.1"+p)
	writeJSON(w, http.StatusCreated, map[string]any{"@odata.id": p, "UserName": testUser})
}

func (f *fakeBMC) get(w http.ResponseWriter, p string) {
	doc, ok := f.res[p]
	if !ok {
		f.fail(w, http.StatusNotFound, "Base.1.4.ResourceMissingAtURI", "")
		return
	}
	if _, isSystem := doc["PowerState"]; !isSystem {
		writeJSON(w, http.StatusOK, doc)
		return
	}
	shown := maps.Clone(doc)
	if ph := f.phases[p]; len(ph) > 0 {
		shown["PowerState"] = ph[0]
		f.phases[p] = ph[1:]
	}
	if st, ok := f.stale[p]; ok && st.reads > 0 {
		shown["Boot"] = st.boot
		st.reads--
		f.stale[p] = st
	}
	if _, ok := doc["@odata.etag"]; ok {
		shown["@odata.etag"] = f.etag(p)
	}
	w.Header().Set("ETag", f.etag(p))
	writeJSON(w, http.StatusOK, shown)
}

func (f *fakeBMC) patch(w http.ResponseWriter, r *http.Request, p string, body []byte) {
	doc, ok := f.res[p]
	if _, isSystem := doc["PowerState"]; !ok || !isSystem {
		f.fail(w, http.StatusMethodNotAllowed, "Base.1.4.OperationNotAllowed", "")
		return
	}
	f.counts["PATCH"]++
	im := r.Header.Get("If-Match")
	switch {
	case im == "" && f.rules.requireIfMatch:
		f.fail(w, http.StatusPreconditionRequired, "Base.1.4.PreconditionRequired", "")
		return
	case im != "" && im != f.etag(p):
		f.counts["412"]++
		f.fail(w, http.StatusPreconditionFailed, "Base.1.4.PreconditionFailed", "")
		return
	}
	var req struct {
		Boot map[string]any
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Boot == nil {
		f.fail(w, http.StatusBadRequest, "Base.1.4.MalformedJSON", "")
		return
	}
	boot := maps.Clone(doc["Boot"].(map[string]any))
	old := doc["Boot"]
	// In a fixed order (a map's is random): the refusal a test expects must not depend on which
	// property the fake happens to look at first.
	for _, k := range slices.Sorted(maps.Keys(req.Boot)) {
		v := req.Boot[k]
		switch k {
		case "BootSourceOverrideMode":
			if f.rules.modeWriteStatus != 0 {
				f.counts["modeWrite"]++
				f.fail(w, f.rules.modeWriteStatus, "iLO.2.14.PropertyNotWritableOrUnknown", "BootSourceOverrideMode")
				return
			}
			if v != "UEFI" && v != "Legacy" {
				f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyValueNotInList", "")
				return
			}
		case "BootSourceOverrideTarget":
			if !slices.Contains(allowed(boot), v) {
				f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyValueNotInList", fmt.Sprint(v))
				return
			}
		case "BootSourceOverrideEnabled":
			if v != "Once" && v != "Continuous" && v != "Disabled" {
				f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyValueNotInList", "")
				return
			}
		case "HttpBootUri":
			if _, known := boot["HttpBootUri"]; !known {
				f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyUnknown", k)
				return
			}
		default:
			f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyUnknown", k)
			return
		}
		boot[k] = v
	}
	if boot["BootSourceOverrideTarget"] == "UefiHttp" && (boot["BootSourceOverrideMode"] != "UEFI" || boot["HttpBootUri"] == nil) {
		f.fail(w, http.StatusBadRequest, "Base.1.4.PropertyValueConflict", "UefiHttp needs UEFI mode and HttpBootUri")
		return
	}
	doc["Boot"] = boot
	f.version[p]++
	if f.rules.bootReads > 0 {
		f.stale[p] = stale{boot: old, reads: f.rules.bootReads}
	}
	f.success(w)
}

func allowed(boot map[string]any) []any {
	if v, ok := boot["BootSourceOverrideTarget@Redfish.AllowableValues"].([]any); ok {
		return v
	}
	v, _ := boot["BootSourceOverrideSupported"].([]any)
	return v
}

func (f *fakeBMC) post(w http.ResponseWriter, r *http.Request, p string, body []byte) {
	sys, ok := f.resets[p]
	if !ok {
		f.fail(w, http.StatusMethodNotAllowed, "Base.1.4.OperationNotAllowed", "")
		return
	}
	if r.Header.Get("If-Match") != "" && f.rules.rejectIfMatchOnPost {
		f.fail(w, http.StatusBadRequest, "Base.1.4.HeaderInvalid", "If-Match")
		return
	}
	var req struct{ ResetType string }
	if json.Unmarshal(body, &req) != nil || req.ResetType == "" {
		f.fail(w, http.StatusBadRequest, "Base.1.4.ActionParameterMissing", "ResetType")
		return
	}
	doc := f.res[sys]
	rs := doc["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
	if !slices.Contains(rs["ResetType@Redfish.AllowableValues"].([]any), any(req.ResetType)) {
		f.counts["badReset"]++
		f.fail(w, http.StatusBadRequest, "Base.1.4.ActionParameterValueNotInList", req.ResetType)
		return
	}
	if len(f.phases[sys]) > 0 {
		f.fail(w, http.StatusBadRequest, "iLO.2.14.InvalidOperationForSystemState", "in transition")
		return
	}
	on := doc["PowerState"] == "On"
	n := f.rules.transitionReads
	rep := func(s string, k int) []string { return slices.Repeat([]string{s}, k) }
	var phases []string
	final := doc["PowerState"]
	switch req.ResetType {
	case "On", "ForceOn":
		if on {
			f.fail(w, http.StatusBadRequest, "iLO.2.14.InvalidOperationForSystemState", "already on")
			return
		}
		phases, final = rep("PoweringOn", n), "On"
	case "ForceOff":
		if !on {
			f.fail(w, http.StatusBadRequest, "iLO.2.14.InvalidOperationForSystemState", "already off")
			return
		}
		phases, final = rep("PoweringOff", n), "Off"
	case "GracefulShutdown":
		if !on {
			f.fail(w, http.StatusBadRequest, "iLO.2.14.InvalidOperationForSystemState", "already off")
			return
		}
		phases, final = rep("On", n), "Off"
	case "PushPowerButton":
		if on {
			phases, final = rep("On", n), "Off"
		} else {
			phases, final = rep("PoweringOn", n), "On"
		}
	case "ForceRestart", "GracefulRestart":
		if !on {
			f.fail(w, http.StatusBadRequest, "iLO.2.14.InvalidOperationForSystemState", "off")
			return
		}
		phases = append([]string{"PoweringOff"}, rep("PoweringOn", n)...)
	case "PowerCycle":
		phases, final = append(rep("Off", n), "PoweringOn"), "On"
	}
	f.counts["reset "+req.ResetType]++
	doc["PowerState"] = final
	f.phases[sys] = phases
	f.version[sys]++
	f.success(w)
}

func (f *fakeBMC) success(w http.ResponseWriter) {
	if f.rules.envelope == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, f.rules.envelope, map[string]any{"error": map[string]any{
		"code":                  "iLO.0.10.ExtendedInfo",
		"message":               "See @Message.ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": f.rules.successID}},
	}})
}

func (f *fakeBMC) fail(w http.ResponseWriter, status int, id, arg string) {
	info := map[string]any{"MessageId": id}
	if arg != "" {
		info["MessageArgs"] = []any{arg, 3} // iLO mixes strings and numbers here
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code":                  "iLO.0.10.ExtendedInfo",
		"message":               "See @Message.ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []any{info},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// memTransport serves requests from a handler in memory: no sockets, so it works inside a
// synctest bubble. A request whose context ends stops waiting, as a real client does.
type memTransport struct{ h http.Handler }

func (t memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	sreq := req.Clone(req.Context())
	sreq.Body = io.NopCloser(bytes.NewReader(body))
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "192.0.2.1:40000"
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.h.ServeHTTP(rec, sreq)
	}()
	select {
	case <-done:
		return rec.Result(), nil
	case <-req.Context().Done():
		<-done // handlers honour the context
		return nil, req.Context().Err()
	}
}

// roundTripFunc adapts a function, for transport-level faults.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// testConfig is a fast configuration for tests on the in-memory transport.
func testConfig() Config {
	return Config{
		Name:     "bmc1",
		Endpoint: &url.URL{Scheme: "https", Host: "bmc1.test"},
		Username: testUser,
		Password: testPass,
	}
}

// testClient builds a Client on rt with cfg's defaults filled in and jitter pinned to its
// upper bound, so that waits are exact.
func testClient(t testing.TB, cfg Config, rt http.RoundTripper, opts ...func(*Client)) *Client {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(cfg, nil, nil, rt)
	c.jitter = func(max time.Duration) time.Duration { return max }
	for _, o := range opts {
		o(c)
	}
	return c
}
