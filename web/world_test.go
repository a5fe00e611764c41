package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/store"
)

// The tokens of the test world: one of each scope.
const (
	readToken  = "imaged_READ_token_0123456789abcdef"
	opToken    = "imaged_OPERATE_token_0123456789abcdef"
	adminToken = "imaged_ADMIN_token_0123456789abcdef"
)

func tokenHash(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

// fakeJobs is the jobs as the API and the dashboard see them: a machine with an unfinished job
// is busy; tests set states, phases and progress by hand.
type fakeJobs struct {
	mu   sync.Mutex
	jobs []jobs.Job
}

func (f *fakeJobs) Submit(ctx context.Context, req jobs.Request) (jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.Machine == req.Machine && !j.State.Done() {
			return j, fmt.Errorf("jobs: machine %s: %w (%s, %s)", req.Machine, jobs.ErrBusy, j.ID, j.Phase)
		}
	}
	now := time.Now().UTC()
	j := jobs.Job{ID: fmt.Sprintf("job%02d", len(f.jobs)+1), Kind: req.Kind, Machine: req.Machine, By: req.By, State: jobs.StateQueued,
		Phase: jobs.PhaseQueued, Created: now, Updated: now, Phases: []jobs.PhaseTime{{Phase: jobs.PhaseQueued, Start: now}}}
	if req.Probe != nil {
		j.Probe = *req.Probe
	}
	if req.Kind == jobs.KindReimage {
		img := req.Image
		j.Image = &img
	}
	j.Timeline = []jobs.Entry{{Seq: 1, Time: now, Phase: jobs.PhaseQueued, Message: string(req.Kind) + " requested by " + req.By}}
	f.jobs = append(f.jobs, j)
	return j, nil
}

func (f *fakeJobs) Cancel(id, by string) (jobs.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, j := range f.jobs {
		if j.ID == id {
			if j.State.Done() {
				return j, fmt.Errorf("jobs: cancel %s: %w", id, jobs.ErrFinished)
			}
			f.jobs[i].State, f.jobs[i].Reason = jobs.StateCancelled, "cancelled by "+by
			return f.jobs[i], nil
		}
	}
	return jobs.Job{}, fmt.Errorf("jobs: cancel %s: %w", id, jobs.ErrNotFound)
}

func (f *fakeJobs) Get(id string) (jobs.Job, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j, true
		}
	}
	return jobs.Job{}, false
}

func (f *fakeJobs) List(fl jobs.Filter) []jobs.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []jobs.Job
	for i := len(f.jobs) - 1; i >= 0; i-- {
		j := f.jobs[i]
		if (fl.Machine == "" || j.Machine == fl.Machine) && (!fl.Active || !j.State.Done()) {
			out = append(out, j)
		}
	}
	if fl.Limit > 0 && len(out) > fl.Limit {
		out = out[:fl.Limit]
	}
	return out
}

func (f *fakeJobs) Latest(machine string) (jobs.Job, bool) {
	if l := f.List(jobs.Filter{Machine: machine, Limit: 1}); len(l) > 0 {
		return l[0], true
	}
	return jobs.Job{}, false
}

func (f *fakeJobs) Observe(string, jobs.Signal) {}
func (f *fakeJobs) CheckIn(machine string, d images.Digest) (machines.CheckIn, error) {
	return machines.CheckIn{Machine: machine, Digest: d}, nil
}
func (f *fakeJobs) LastCheckIn(string) (machines.CheckIn, bool) { return machines.CheckIn{}, false }

// set changes job id in place.
func (f *fakeJobs) set(id string, change func(j *jobs.Job)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.jobs {
		if f.jobs[i].ID == id {
			change(&f.jobs[i])
		}
	}
}

func (f *fakeJobs) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

// fakeBMCs powers every machine whose id starts with ms1- through BMC ms1.
type fakeBMCs struct {
	mu       sync.Mutex
	degraded bool
	calls    []string
}

func (f *fakeBMCs) BMCName(m string) string {
	if strings.HasPrefix(m, "ms1-") {
		return "ms1"
	}
	return ""
}
func (f *fakeBMCs) System(ctx context.Context, m string) (power.System, error) {
	return power.System{ID: strings.ToUpper(strings.TrimPrefix(m, "ms1-")), Power: power.On, Health: "OK"}, nil
}
func (f *fakeBMCs) Power(ctx context.Context, m string, a power.Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, m+" "+string(a))
	return nil
}
func (f *fakeBMCs) BootOnce(ctx context.Context, m string, t power.BootTarget, uri string) error {
	return nil
}
func (f *fakeBMCs) Systems(ctx context.Context, bmc string) ([]power.System, error) { return nil, nil }
func (f *fakeBMCs) Health(bmc string) (power.Health, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return power.Health{Degraded: f.degraded, Failures: 3, LastError: "connection refused"}, bmc == "ms1"
}
func (f *fakeBMCs) Names() []string { return []string{"ms1"} }

// world is a dashboard over a real store, inventory and catalog, with fake jobs and BMCs.
type world struct {
	t       testing.TB
	st      *store.Store
	inv     *inventory.Inventory
	jobs    *fakeJobs
	bmcs    *fakeBMCs
	api     *api.Server
	web     *Server
	h       http.Handler
	reg     *prometheus.Registry
	logs    *syncBuffer
	d121    images.Digest
	d122    images.Digest
	clockMu sync.Mutex
	clock   time.Time // the sessions' clock; zero: time.Now
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testMachines: bay 1 holds an m700 cartridge's four nodes, bay 2 one node, and a lab machine
// and one without a place.
func testMachines() []machines.Machine {
	mac := func(i int) []machines.MAC {
		return []machines.MAC{machines.MustParseMAC(fmt.Sprintf("52:54:00:99:00:%02x", i))}
	}
	return []machines.Machine{
		{ID: "ms1-c1n1", MACs: mac(1), Chassis: "ms1", Slot: 1, Node: 1, WorkerGroup: "linux", BMC: "ms1", Boot: "agent"},
		{ID: "ms1-c1n2", MACs: mac(2), Chassis: "ms1", Slot: 1, Node: 2, WorkerGroup: "linux", BMC: "ms1", Boot: "agent"},
		{ID: "ms1-c1n3", MACs: mac(3), Chassis: "ms1", Slot: 1, Node: 3, WorkerGroup: "linux", BMC: "ms1", Boot: "agent"},
		{ID: "ms1-c1n4", MACs: mac(4), Chassis: "ms1", Slot: 1, Node: 4, WorkerGroup: "linux", BMC: "ms1", Boot: "agent"},
		{ID: "ms1-c2n1", MACs: mac(5), Chassis: "ms1", Slot: 2, Node: 1, WorkerGroup: "windows", BMC: "ms1", Boot: "agent"},
		{ID: "lab-1", MACs: mac(6), Chassis: "lab", Slot: 1, Node: 1, Boot: "agent"},
		{ID: "loose", MACs: mac(7), Boot: "local"},
	}
}

func newWorld(t testing.TB, anonymousRead bool) *world {
	t.Helper()
	w := &world{t: t, jobs: &fakeJobs{}, bmcs: &fakeBMCs{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.st = st
	if err := st.SyncMachines(testMachines()); err != nil {
		t.Fatal(err)
	}
	w.d121, _ = images.ParseDigest(strings.Repeat("ab", 32))
	w.d122, _ = images.ParseDigest(strings.Repeat("cd", 32))
	st.PutImage(images.Image{Name: "debian", Version: "12.1", Digest: w.d121, Size: 1 << 30, DataBytes: 300 << 20, DataBlocks: 600, Imported: time.Now().Add(-48 * time.Hour), ImportedBy: "token admin"})
	st.PutImage(images.Image{Name: "debian", Version: "12.2", Digest: w.d122, Size: 1 << 30, DataBytes: 310 << 20, DataBlocks: 620, Imported: time.Now().Add(-time.Hour), ImportedBy: "token admin"})
	st.Promote("debian", "12.1", "production", "token admin")
	// ms1-c1n1 runs its assigned image; ms1-c1n2 is assigned one it does not run yet.
	st.AssignImage("ms1-c1n1", w.d121, "debian@production")
	st.SetCurrentImage("ms1-c1n1", w.d121)
	st.AssignImage("ms1-c1n2", w.d121, "")
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.inv, err = inventory.New(st, inventory.Config{Log: log, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("https://10.99.0.1:8443")
	cat := catalog.New(st, nil, log)
	w.api = api.New(api.Deps{Inventory: w.inv, Catalog: cat, BMCs: w.bmcs, Jobs: w.jobs, PublicURL: u, Log: log})
	tokens := api.NewTokens([]api.Token{{Name: "reader", Scope: api.ScopeRead, SHA256: tokenHash(readToken)},
		{Name: "ops", Scope: api.ScopeOperate, SHA256: tokenHash(opToken)}, {Name: "admin", Scope: api.ScopeAdmin, SHA256: tokenHash(adminToken)}})
	w.web, err = New(Config{Tokens: tokens, AnonymousRead: anonymousRead, MaxSessions: 4, MaxSessionsPerClient: 2},
		Deps{API: w.api, Inventory: w.inv, Catalog: cat, Jobs: w.jobs, BMCs: w.bmcs, Gatherer: w.reg, Registerer: w.reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	w.web.sessions.now = w.now
	mux := http.NewServeMux()
	w.web.Register(mux)
	w.api.Register(mux)
	w.h = mux
	return w
}

func (w *world) now() time.Time {
	w.clockMu.Lock()
	defer w.clockMu.Unlock()
	if w.clock.IsZero() {
		return time.Now()
	}
	return w.clock
}

// advance moves the sessions' clock on by d.
func (w *world) advance(d time.Duration) {
	w.clockMu.Lock()
	defer w.clockMu.Unlock()
	if w.clock.IsZero() {
		w.clock = time.Now()
	}
	w.clock = w.clock.Add(d)
}

// browser keeps cookies between requests, as a browser does for one origin.
type browser struct {
	w       *world
	cookies map[string]*http.Cookie
	remote  string
	tls     bool
}

func (w *world) browser() *browser {
	return &browser{w: w, cookies: map[string]*http.Cookie{}, remote: "192.0.2.10:40000"}
}

func (b *browser) do(r *http.Request) *httptest.ResponseRecorder {
	b.w.t.Helper()
	r.RemoteAddr = b.remote
	if b.tls {
		r.TLS = &tlsState
	}
	for _, c := range b.cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	b.w.h.ServeHTTP(rec, r)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return rec
}

func (b *browser) get(path string) *httptest.ResponseRecorder {
	return b.do(httptest.NewRequest("GET", path, nil))
}

// post sends form as a browser submits it (from this dashboard's own origin).
func (b *browser) post(path string, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	scheme := "http"
	if b.tls {
		scheme = "https"
	}
	r.Header.Set("Origin", scheme+"://"+r.Host)
	return b.do(r)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the forms of the page at path.
func (b *browser) csrf(path string) string {
	b.w.t.Helper()
	rec := b.get(path)
	m := csrfField.FindStringSubmatch(rec.Body.String())
	if m == nil {
		b.w.t.Fatalf("GET %s: no CSRF token in the page (%d)", path, rec.Code)
	}
	return m[1]
}

var loginCSRF = regexp.MustCompile(`(?s)id="form-login">\s*<input type="hidden" name="csrf" value="([^"]+)"`)

// signIn signs the browser in with token.
func (b *browser) signIn(token string) *httptest.ResponseRecorder {
	b.w.t.Helper()
	m := loginCSRF.FindStringSubmatch(b.get("/ui/login").Body.String())
	if m == nil {
		b.w.t.Fatal("the sign-in page has no form with a CSRF token")
	}
	return b.post("/ui/login", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/"}})
}

// act posts form (with the session's CSRF token and the confirmation) to path.
func (b *browser) act(path string, form url.Values) *httptest.ResponseRecorder {
	b.w.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", b.csrf("/ui/status"))
	if !form.Has("confirm") {
		form.Set("confirm", "yes")
	}
	return b.post(path, form)
}

func (w *world) refused(reason string) float64 {
	return testutil.ToFloat64(w.web.met.refused.WithLabelValues(reason))
}

// checkPage fails unless rec is status and its body has every one of want.
func checkPage(t testing.TB, what string, rec *httptest.ResponseRecorder, status int, want ...string) {
	t.Helper()
	body := rec.Body.String()
	if rec.Code != status {
		t.Errorf("%s: status %d, want %d\n%s", what, rec.Code, status, excerpt(body))
		return
	}
	for _, s := range want {
		if !strings.Contains(body, s) {
			t.Errorf("%s: the page lacks %q\n%s", what, s, excerpt(body))
		}
	}
}

func excerpt(s string) string {
	if i := strings.Index(s, "<main"); i >= 0 {
		s = s[i:]
	}
	if len(s) > 3000 {
		s = s[:3000] + "…"
	}
	return s
}

// tlsState marks a request as come over TLS.
var tlsState tls.ConnectionState

// opPrincipal acts in the tests' set-up as the operate token does.
var opPrincipal = api.Principal{Name: "token ops", Scope: api.ScopeOperate}

func httptestDo(h http.Handler, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}
