package vbmc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server is the Redfish service of one chassis.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener // nil when only Handler is used
	handler http.Handler
	systems map[string]*system
	order   []*system // Members order: the order of the blades given to New
	sess    *sessions

	// life bounds background work (graceful shutdowns in flight); Run ends it.
	life    context.Context
	stop    context.CancelFunc
	bg      sync.WaitGroup
	running bool
}

// New validates cfg and blades and binds the listener (Config.Addr or Config.Listener), so that
// a bad address or certificate fails before anything is served. log may be nil.
func New(cfg Config, blades []Blade, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = discard
	}
	cfg.setDefaults()
	errs := []error{cfg.validate()}
	s := &Server{cfg: cfg, log: log, systems: map[string]*system{}}
	for i, b := range blades {
		if b == nil {
			errs = append(errs, fmt.Errorf("blade %d is nil", i))
			continue
		}
		id := b.ID()
		switch {
		case !validID(id):
			errs = append(errs, fmt.Errorf("blade id %q is not a URL path segment", id))
		case s.systems[id] != nil:
			errs = append(errs, fmt.Errorf("blade id %q appears twice", id))
		case len(b.MAC()) == 0:
			errs = append(errs, fmt.Errorf("blade %s has no MAC address", id))
		default:
			sys := newSystem(s, b)
			s.systems[id] = sys
			s.order = append(s.order, sys)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, fmt.Errorf("vbmc: %w", err)
	}
	s.sess = newSessions(cfg.MaxSessions, cfg.SessionTimeout)
	s.life, s.stop = context.WithCancel(context.Background())
	s.handler = s.routes()

	ln := cfg.Listener
	if ln == nil && cfg.Addr != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("vbmc: listen: %w", err)
		}
	}
	if ln != nil && !cfg.PlainHTTP {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("vbmc: TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	s.ln = ln
	return s, nil
}

// Handler is the Redfish service as an http.Handler, for embedding or for tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the address the server listens on, or nil without a listener.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL is the service's base URL, such as "https://127.0.0.1:41234", or "" without a listener.
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	scheme := "https"
	if s.cfg.PlainHTTP {
		scheme = "http"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// shutdownTimeout bounds how long Run waits for requests in flight once ctx is done.
const shutdownTimeout = 5 * time.Second

// Run serves until ctx is done, then stops accepting connections, lets the requests in flight
// finish (at most 5 s, on a fresh context: ctx is already cancelled), cancels the graceful
// shutdowns still waiting for their guests and returns nil.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("vbmc: Run needs Config.Addr or Config.Listener")
	}
	if s.running {
		return errors.New("vbmc: Run called twice")
	}
	s.running = true
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.life },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if serr := srv.Shutdown(sctx); serr != nil {
			srv.Close()
		}
		cancel()
		<-errc
	case err = <-errc:
		err = fmt.Errorf("vbmc: serve: %w", err)
	}
	s.stop()
	s.bg.Wait()
	return err
}

// routes builds the URL tree. Every resource but the service root, /redfish, the OData service
// document and the session login requires authentication (DSP0266 "Authentication
// requirements"); authentication is checked before the resource is looked up, so that an
// unauthenticated client learns nothing of what exists.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	open := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, h) }
	authed := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.requireAuth(h)) }

	open("/redfish", s.serveVersions)
	open("/redfish/v1/{$}", s.serveRoot)
	open("/redfish/v1/odata", s.serveOData)
	mux.Handle("/redfish/v1/SessionService/Sessions", s.sessionsCollection())
	authed("/redfish/v1/SessionService", s.serveSessionService)
	authed("/redfish/v1/SessionService/Sessions/{sid}", s.serveSession)
	authed("/redfish/v1/Systems", s.serveSystems)
	authed("/redfish/v1/Systems/{id}", s.withSystem((*system).serve))
	authed("/redfish/v1/Systems/{id}/EthernetInterfaces", s.withSystem((*system).serveNICs))
	authed("/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}", s.withSystem((*system).serveNIC))
	authed("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset", s.withSystem((*system).serveReset))
	authed("/redfish/v1/Systems/{id}/Oem/Imaged/ConsoleLog", s.withSystem((*system).serveConsole))
	authed("/redfish/v1/Managers", s.serveManagers)
	authed("/redfish/v1/Managers/{id}", s.chassisResource(s.manager))
	authed("/redfish/v1/Chassis", s.serveChassisCollection)
	authed("/redfish/v1/Chassis/{id}", s.chassisResource(s.chassis))
	authed("/", errMissing)
	return s.common(mux)
}

// common sets the headers every response carries and maps URIs with a trailing slash onto the
// canonical ones: clients join paths both ways (sushy asks for "/redfish/v1/", others for
// "/redfish/v1"); only the service root's canonical form has the slash.
func (s *Server) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// DSP0266: "OData-Version: 4.0" on every response. There is no Redfish-Version header
		// in the spec; the protocol version is the service root's RedfishVersion.
		w.Header().Set("OData-Version", "4.0")
		w.Header().Set("Cache-Control", "no-cache")
		p := r.URL.Path
		switch {
		case p == "/redfish/v1":
			p = "/redfish/v1/"
		case len(p) > len("/redfish/v1/") && strings.HasSuffix(p, "/"), p == "/redfish/":
			p = strings.TrimRight(p, "/")
		}
		if p != r.URL.Path {
			r2 := r.Clone(r.Context())
			r2.URL.Path, r2.URL.RawPath = p, ""
			r = r2
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) withSystem(h func(*system, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sys := s.systems[r.PathValue("id")]
		if sys == nil {
			errMissing(w, r)
			return
		}
		h(sys, w, r)
	}
}

// maxBody bounds request bodies: every valid one here is a few hundred bytes.
const maxBody = 64 << 10

// readBody reads a request body of at most maxBody bytes, answering 413 when it is larger.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, msgPayloadTooLarge.info(""))
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, msgMalformedJSON.info(""))
		return nil, false
	}
	return b, true
}

// etagOf is the entity tag of a resource: a digest of its representation (without
// @odata.etag), so it changes whenever anything in the resource changes, the power state
// included. encoding/json sorts map keys, so equal resources give equal tags.
func etagOf(doc map[string]any) string {
	delete(doc, "@odata.etag")
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // only maps, slices, strings, numbers and bools are ever put in doc
	}
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// writeResource answers with a Redfish resource, its ETag header and @odata.etag.
func writeResource(w http.ResponseWriter, status int, doc map[string]any) {
	writeJSON(w, status, doc, true)
}

func writeJSON(w http.ResponseWriter, status int, doc any, tagged bool) {
	if m, ok := doc.(map[string]any); ok && tagged {
		tag := etagOf(m)
		m["@odata.etag"] = tag
		w.Header().Set("ETag", tag)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err) // as in etagOf
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// ifMatch reports whether the If-Match header of r, if any, names current (RFC 9110 13.1.1).
// The service's tags are strong; a W/ form of one is accepted too, since some clients weaken
// the tags they echo and the representation it names is still byte-identical.
func ifMatch(r *http.Request, current string) bool {
	vals := r.Header.Values("If-Match")
	if len(vals) == 0 {
		return true
	}
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == "*" || t == current {
				return true
			}
		}
	}
	return false
}

func link(path string) map[string]any { return map[string]any{"@odata.id": path} }

func links(paths ...string) []any {
	out := make([]any, 0, len(paths))
	for _, p := range paths {
		out = append(out, link(p))
	}
	return out
}

// collection is a resource collection document.
func collection(path, typ, name string, members []string) map[string]any {
	return map[string]any{
		"@odata.id":           path,
		"@odata.type":         "#" + typ + "." + typ,
		"Name":                name,
		"Members":             links(members...),
		"Members@odata.count": len(members),
	}
}
