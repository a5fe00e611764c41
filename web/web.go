// Package web is imaged's dashboard: server-rendered pages (html/template) of the chassis and
// its machines, their jobs, the image catalog and the daemon's status, with htmx and its SSE
// extension (vendored in static/, embedded, nothing fetched at run time) swapping in fragments
// the server renders as things change. Every page works with JavaScript off: its forms POST and
// redirect.
//
// It holds no rule of its own about machines, jobs or images: it reads the inventory, the jobs,
// the catalog and the BMC fleet, and acts through internal/api's operations (api.Server.Reimage,
// RetryJob, Promote, …) with the signed-in token's Principal, so that a change made here is
// checked and recorded exactly as the same change through /api/v1. A token is checked by
// api.Tokens, as a bearer token is. Reads follow the API's read policy (anonymous only with
// api.anonymous_read); actions need a session of an operate or admin token (auth.go).
//
// Live updates (live.go): one Server-Sent Events stream per page, which first sends the page's
// live parts whole (a snapshot, on every connect and reconnect, so that a dropped connection
// never leaves a stale page), then each machine's changes, at most one progress update per
// machine a second.
//
// Only cmd/imaged imports it; it imports internal/api and the services the API serves.
package web

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/power"
)

//go:embed templates static
var files embed.FS

// StreamPath is the dashboard's event stream: a Stream for internal/httplimit.
const StreamPath = "/ui/events"

// Jobs is what the dashboard reads of the reimage jobs.
type Jobs interface {
	Latest(machine string) (jobs.Job, bool)
	Get(id string) (jobs.Job, bool)
	List(f jobs.Filter) []jobs.Job
}

// BMCs is what the dashboard reads of the BMC fleet: its breakers.
type BMCs interface {
	Names() []string
	Health(bmc string) (power.Health, bool)
}

// Config is how the dashboard signs people in and paces its updates.
type Config struct {
	Tokens        *api.Tokens // api.tokens: who may sign in, with which scope
	AnonymousRead bool        // api.anonymous_read: pages are read without signing in
	// Sessions: how long one lasts (DefaultSessionTTL), how many may be open at once
	// (DefaultMaxSessions) and from one client address (DefaultMaxSessionsPerClient).
	SessionTTL           time.Duration
	MaxSessions          int
	MaxSessionsPerClient int
	// Coalesce is the least time between two updates of one machine's progress (one second).
	Coalesce time.Duration
	Version  string
}

// Defaults of Config.
const (
	DefaultSessionTTL           = 12 * time.Hour
	DefaultMaxSessions          = 256
	DefaultMaxSessionsPerClient = 8
	DefaultCoalesce             = time.Second
)

// Deps are the services the dashboard reads and acts through. Jobs, BMCs and Gatherer may be nil.
type Deps struct {
	API        *api.Server
	Inventory  *inventory.Inventory
	Catalog    *catalog.Service
	Jobs       Jobs
	BMCs       BMCs
	Gatherer   prometheus.Gatherer   // the status page's DHCP, TFTP and HTTP counters
	Registerer prometheus.Registerer // the dashboard's own metrics; nil: kept, not exported
	Log        *slog.Logger
}

// Server serves the dashboard.
type Server struct {
	cfg      Config
	d        Deps
	log      *slog.Logger
	pages    map[string]*pageTemplate
	sessions *sessions
	hub      *hub
	met      *metrics
	static   http.Handler

	closing   chan struct{}
	closeOnce sync.Once
}

// New checks cfg and d and parses the templates.
func New(cfg Config, d Deps) (*Server, error) {
	if d.API == nil || d.Inventory == nil || d.Catalog == nil || cfg.Tokens == nil {
		return nil, errors.New("web: the API, the inventory, the catalog and the tokens are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	cfg.SessionTTL = cmpOr(cfg.SessionTTL, DefaultSessionTTL)
	cfg.MaxSessions = cmpOr(cfg.MaxSessions, DefaultMaxSessions)
	cfg.MaxSessionsPerClient = cmpOr(cfg.MaxSessionsPerClient, DefaultMaxSessionsPerClient)
	cfg.Coalesce = cmpOr(cfg.Coalesce, DefaultCoalesce)
	s := &Server{cfg: cfg, d: d, log: d.Log, closing: make(chan struct{})}
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if s.met, err = newMetrics(d.Registerer); err != nil {
		return nil, err
	}
	s.sessions = newSessions(cfg, s.met, time.Now)
	s.hub = newHub(s, cfg.Coalesce)
	sub, _ := fs.Sub(files, "static")
	s.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	return s, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Register adds the dashboard's routes to mux: / and everything under /ui/.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.read(s.chassisPage))
	mux.HandleFunc("GET /ui/machines/{id}", s.read(s.machinePage))
	mux.HandleFunc("GET /ui/jobs", s.read(s.jobsPage))
	mux.HandleFunc("GET /ui/jobs/{id}", s.read(s.jobPage))
	mux.HandleFunc("GET /ui/images", s.read(s.imagesPage))
	mux.HandleFunc("GET /ui/status", s.read(s.statusPage))
	mux.HandleFunc("GET /ui/bulk", s.read(s.bulkPage))
	mux.HandleFunc("GET "+StreamPath, s.read(s.events))
	mux.HandleFunc("GET /ui/login", s.loginPage)
	mux.HandleFunc("POST /ui/login", s.login)
	mux.HandleFunc("POST /ui/logout", s.act(api.ScopeNone, s.logout))
	mux.HandleFunc("POST /ui/machines/{id}/reimage", s.act(api.ScopeOperate, s.reimage))
	mux.HandleFunc("POST /ui/machines/{id}/reboot", s.act(api.ScopeOperate, s.reboot))
	mux.HandleFunc("POST /ui/machines/{id}/power", s.act(api.ScopeOperate, s.power))
	mux.HandleFunc("POST /ui/jobs/{id}/cancel", s.act(api.ScopeOperate, s.cancel))
	mux.HandleFunc("POST /ui/jobs/{id}/retry", s.act(api.ScopeOperate, s.retry))
	mux.HandleFunc("POST /ui/images/{name}/promote", s.act(api.ScopeOperate, s.promote))
	mux.HandleFunc("POST /ui/images/{ref}/rollback", s.act(api.ScopeOperate, s.rollback))
	mux.HandleFunc("POST /ui/bulk", s.act(api.ScopeOperate, s.bulk))
	mux.HandleFunc("GET /ui/static/", s.serveStatic)
	mux.HandleFunc("/ui/", s.read(func(w http.ResponseWriter, r *http.Request, v viewer) {
		s.notFound(w, r, v, "There is no page at "+r.URL.Path+".")
	}))
}

// Run feeds the live updates until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.hub.run(ctx)
	return nil
}

// CloseStreams ends every event stream (the HTTP server's Shutdown waits for its handlers).
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// serveStatic serves the embedded CSS and scripts. Their URLs carry the version (?v=), so they
// may be cached for a day.
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") {
		http.NotFound(w, r) // no listing of the directory
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.static.ServeHTTP(w, r)
}
