// Package api serves imaged's versioned HTTP interfaces: the agent API under /agent/v1 (boot
// tokens) and the operator API under /api/v1, where every route needs a Principal with a Scope
// (api.tokens over TCP, the control socket's peer, or api.anonymous_read for reads), except the
// booted machines' metadata and check-in, known by their address. HTTP status codes are chosen here and nowhere
// else. Every error is JSON: {"error": "...", "field": "..."}.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
)

// maxBody bounds every request body; a larger one gets 413.
const maxBody = 64 << 10

// Server holds the API's collaborators.
type Server struct {
	inv         *inventory.Inventory
	catalog     *catalog.Service
	blobs       Blobs
	bmcs        BMCs
	jobs        Jobs
	stalePolicy bool
	routes      []Route
	closing     chan struct{} // closed by CloseStreams
	closeOnce   sync.Once
	log         *slog.Logger
	publicURL   *url.URL
	proofs      *proofs
	metrics     *metrics
}

// Deps are the API's collaborators. Blobs, BMCs and Jobs may be nil (then those endpoints answer
// that nothing is there: the CLI's in-process API runs no jobs).
type Deps struct {
	Inventory *inventory.Inventory
	Catalog   *catalog.Service // the image catalog; the jobs' images come from it
	Blobs     Blobs
	BMCs      BMCs
	Jobs      Jobs
	// ReimageStale submits a reimage to the assigned image when a machine checks in with another.
	ReimageStale bool
	PublicURL    *url.URL // how blades reach imaged (for the URLs in plans)
	Log          *slog.Logger
	Registerer   prometheus.Registerer // may be nil: metrics are kept but not exported
}

// New returns the API server.
func New(d Deps) *Server {
	return &Server{inv: d.Inventory, catalog: d.Catalog, blobs: d.Blobs, bmcs: d.BMCs, jobs: d.Jobs, stalePolicy: d.ReimageStale, log: d.Log, publicURL: d.PublicURL,
		closing: make(chan struct{}), proofs: newProofs(d.Blobs), metrics: newMetrics(d.Registerer, d.Log)}
}

// Register adds the API's routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	s.route(mux, "POST /"+agentapi.HelloPath, ScopeNone, s.hello)
	s.route(mux, "GET /"+agentapi.PlanPath, ScopeNone, s.plan)
	s.route(mux, "POST /"+agentapi.ProgressPath, ScopeNone, s.progress)
	s.route(mux, "GET /"+agentapi.ChallengePath, ScopeNone, s.challenge)
	s.route(mux, "POST /"+agentapi.ResultPath, ScopeNone, s.result)
	s.route(mux, "GET /api/v1/machines", ScopeRead, s.machines)
	s.route(mux, "GET /api/v1/machines/{id}", ScopeRead, s.machine)
	s.route(mux, "GET /api/v1/machines/{id}/events", ScopeRead, s.events)
	s.route(mux, "GET /api/v1/unknown-clients", ScopeRead, s.unknownClients)
	s.route(mux, "GET /api/v1/events", ScopeRead, s.eventStream)
	s.registerCatalog(mux)
	s.registerBMC(mux)
	s.registerJobs(mux)
	s.route(mux, "GET /api/v1/openapi.json", ScopeNone, s.openAPI)
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fail(w http.ResponseWriter, status int, field, format string, args ...any) {
	writeJSON(w, status, Error{Error: fmt.Sprintf(format, args...), Field: field})
}

// decode reads a JSON body strictly into v, answering 413, 415 or 400 (naming the field) itself.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		fail(w, http.StatusUnsupportedMediaType, "", "the body must be JSON (Content-Type: application/json), not %s", ct)
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("extra data after the JSON object")
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The listener's read deadline (http.limits.read_timeout) cut a body that came too slowly.
		fail(w, http.StatusRequestTimeout, "", "the body did not arrive in time; send it whole, at once")
	case errors.As(err, &tooBig):
		fail(w, http.StatusRequestEntityTooLarge, "", "the body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &typeErr):
		fail(w, http.StatusBadRequest, typeErr.Field, "field %q must be a %s, not a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		fail(w, http.StatusBadRequest, "", "the body is not valid JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		fail(w, http.StatusBadRequest, field, "unknown field %q", field)
	case errors.Is(err, io.EOF):
		fail(w, http.StatusBadRequest, "", "the body is empty; a JSON object is required")
	default:
		fail(w, http.StatusBadRequest, "", "the body is not valid JSON: %v", err)
	}
	return false
}

func (s *Server) machines(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Views())
}

func (s *Server) machine(w http.ResponseWriter, r *http.Request) {
	v, err := s.MachineDetail(r.Context(), r.PathValue("id"))
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// knownMachine is machine id of the inventory; else it answers 404, naming field.
func (s *Server) knownMachine(w http.ResponseWriter, field, id string) (machines.Machine, bool) {
	m, err := s.machineOf(field, id)
	if err != nil {
		s.answer(w, err)
	}
	return m, err == nil
}

// view adds what other parts of the daemon know about m.
func (s *Server) view(m machines.Machine) MachineView {
	v := MachineView{Machine: m}
	if s.bmcs != nil {
		v.BMCHealth = s.health(s.bmcs.BMCName(m.ID))
	}
	if s.jobs != nil {
		if j, ok := s.jobs.Latest(m.ID); ok {
			v.LastJob = &JobSummary{ID: j.ID, Kind: string(j.Kind), State: string(j.State), Phase: string(j.Phase), Reason: j.Reason}
		}
		if c, ok := s.jobs.LastCheckIn(m.ID); ok {
			v.Stale = c.Stale
			v.CheckIn = &c
		}
	}
	return v
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := s.knownMachine(w, "id", id); !ok {
		return
	}
	var after uint64
	if a := r.URL.Query().Get("after"); a != "" {
		var err error
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			fail(w, http.StatusBadRequest, "after", "%q is not a sequence number", a)
			return
		}
	}
	ev, err := s.inv.Events(id, after)
	if err != nil {
		fail(w, http.StatusInternalServerError, "", "%v", err)
		return
	}
	if ev == nil {
		ev = []machines.Event{}
	}
	writeJSON(w, http.StatusOK, ev)
}

func (s *Server) unknownClients(w http.ResponseWriter, r *http.Request) {
	if err := s.inv.FlushUnknown(); err != nil {
		s.log.Warn("flush unknown clients", "err", err)
	}
	us, err := s.inv.Unknowns()
	if err != nil {
		fail(w, http.StatusInternalServerError, "", "%v", err)
		return
	}
	if us == nil {
		us = []machines.Unknown{}
	}
	writeJSON(w, http.StatusOK, us)
}
