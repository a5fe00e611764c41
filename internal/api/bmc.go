package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// BMCs is what the API asks of the daemon's BMC drivers, by machine id or BMC name.
type BMCs interface {
	BMCName(machine string) string
	System(ctx context.Context, machine string) (power.System, error)
	Power(ctx context.Context, machine string, a power.Action) error
	BootOnce(ctx context.Context, machine string, t power.BootTarget, uri string) error
	Systems(ctx context.Context, bmc string) ([]power.System, error)
	Health(bmc string) (power.Health, bool)
	Names() []string
}

// BMCSystem is one system as its BMC describes it.
type BMCSystem struct {
	ID           string       `json:"id"`
	Name         string       `json:"name,omitempty"`
	Manufacturer string       `json:"manufacturer,omitempty"`
	Model        string       `json:"model,omitempty"`
	SerialNumber string       `json:"serial_number,omitempty"`
	Health       string       `json:"health,omitempty"`
	Power        string       `json:"power"`
	MACs         []string     `json:"macs"`
	ResetTypes   []string     `json:"reset_types,omitempty"`
	Boot         BootOverride `json:"boot"`
}

// BootOverride is a system's boot source override.
type BootOverride struct {
	Target  string   `json:"target"`
	Enabled string   `json:"enabled"`
	Mode    string   `json:"mode,omitempty"`
	URI     string   `json:"uri,omitempty"`
	Targets []string `json:"targets,omitempty"`
}

// BMCHealth is a BMC's circuit breaker: degraded while calls to it fail fast.
type BMCHealth struct {
	Degraded  bool       `json:"degraded"`
	Failures  int        `json:"failures"`
	LastError string     `json:"last_error,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
}

// MachinePower is GET /api/v1/machines/{id}/bmc and the reply to power and boot changes.
type MachinePower struct {
	Machine string     `json:"machine"`
	BMC     string     `json:"bmc"`
	System  BMCSystem  `json:"system"`
	Health  *BMCHealth `json:"health,omitempty"`
}

// BMCInfo is one BMC and, for GET /api/v1/bmcs/{name}, the systems behind it.
type BMCInfo struct {
	Name    string      `json:"name"`
	Health  *BMCHealth  `json:"health,omitempty"`
	Systems []BMCSystem `json:"systems,omitempty"`
}

// PowerRequest asks for a power action: on, off, shutdown, restart, graceful-restart, cycle.
type PowerRequest struct {
	Action string `json:"action"`
}

// BootRequest sets a one-time boot: pxe, disk, uefi-http (with uri) or none.
type BootRequest struct {
	Target string `json:"target"`
	URI    string `json:"uri,omitempty"`
}

// MachineView is a machine with what the daemon knows of it beyond the inventory: its BMC's
// health, its last job, its last check-in (stale: it runs an image other than its assigned
// one) and, for a single machine, its power and health as its BMC reads them.
type MachineView struct {
	machines.Machine
	BMCHealth *BMCHealth        `json:"bmc_health,omitempty"`
	Power     string            `json:"power,omitempty"`
	Health    string            `json:"health,omitempty"`
	LastJob   *JobSummary       `json:"last_job,omitempty"`
	Stale     bool              `json:"stale"`
	CheckIn   *machines.CheckIn `json:"check_in,omitempty"`
}

// JobSummary is a machine's latest job, in the machine list.
type JobSummary struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	State  string `json:"state"`
	Phase  string `json:"phase"`
	Reason string `json:"reason,omitempty"`
}

// SystemView is the API's view of a system.
func SystemView(s power.System) BMCSystem {
	out := BMCSystem{ID: s.ID, Name: s.Name, Manufacturer: s.Manufacturer, Model: s.Model, SerialNumber: s.SerialNumber,
		Health: s.Health, Power: string(s.Power), MACs: []string{}, ResetTypes: s.ResetTypes,
		Boot: BootOverride{Target: string(s.Boot.Target), Enabled: s.Boot.Enabled, Mode: s.Boot.Mode, URI: s.Boot.URI, Targets: s.Boot.Targets}}
	for _, m := range s.MACs {
		out.MACs = append(out.MACs, m.String())
	}
	return out
}

func (s *Server) health(bmc string) *BMCHealth {
	if s.bmcs == nil || bmc == "" {
		return nil
	}
	h, ok := s.bmcs.Health(bmc)
	if !ok {
		return nil
	}
	out := &BMCHealth{Degraded: h.Degraded, Failures: h.Failures, LastError: h.LastError}
	if !h.Since.IsZero() {
		out.Since = &h.Since
	}
	return out
}

func (s *Server) registerBMC(mux *http.ServeMux) {
	s.route(mux, "GET /api/v1/bmcs", ScopeRead, s.listBMCs)
	s.route(mux, "GET /api/v1/bmcs/{name}", ScopeRead, s.getBMC)
	s.route(mux, "GET /api/v1/machines/{id}/bmc", ScopeRead, s.machineBMCInfo)
	s.route(mux, "POST /api/v1/machines/{id}/power", ScopeOperate, s.power)
	s.route(mux, "POST /api/v1/machines/{id}/boot", ScopeOperate, s.boot)
}

// powerProblem is a BMC failure as the API answers it: the caller's mistake is 4xx, the BMC's
// trouble is 5xx (502 when it refused or garbled, 503 while its breaker is open, 504 when it did
// not answer or the state was not reached in time).
func (s *Server) powerProblem(field string, err error) error {
	switch {
	case errors.Is(err, errNoBMCs):
		return problem(http.StatusConflict, "id", "%v", err)
	case errors.Is(err, power.ErrNotFound):
		return problem(http.StatusNotFound, field, "%v", err)
	case errors.Is(err, power.ErrUnsupported):
		return problem(http.StatusBadRequest, field, "%v", err)
	case errors.Is(err, power.ErrDegraded):
		p := problem(http.StatusServiceUnavailable, "", "%v", err)
		p.RetryAfter = 60
		return p
	case errors.Is(err, power.ErrTimeout):
		return problem(http.StatusGatewayTimeout, "", "%v", err)
	case errors.Is(err, power.ErrPrecondition):
		return problem(http.StatusConflict, "", "%v", err)
	case errors.Is(err, context.Canceled):
		return problem(http.StatusServiceUnavailable, "", "the request was cancelled: %v", err)
	}
	return problem(http.StatusBadGateway, "", "%v", err)
}

var errNoBMCs = errors.New("machine has no BMC configured (set machines[].bmc)")

// machineBMC is the BMC of machine id, which must exist and have one.
func (s *Server) machineBMC(id string) (string, error) {
	if _, err := s.machineOf("id", id); err != nil {
		return "", err
	}
	bmc := ""
	if s.bmcs != nil {
		bmc = s.bmcs.BMCName(id)
	}
	if bmc == "" {
		return "", s.powerProblem("id", errNoBMCs)
	}
	return bmc, nil
}

// machinePower reads machine id's system from its BMC.
func (s *Server) machinePower(ctx context.Context, id, bmc string) (MachinePower, error) {
	sys, err := s.bmcs.System(ctx, id)
	if err != nil {
		return MachinePower{}, s.powerProblem("id", err)
	}
	return MachinePower{Machine: id, BMC: bmc, System: SystemView(sys), Health: s.health(bmc)}, nil
}

// answerPower writes a power operation's answer.
func (s *Server) answerPower(w http.ResponseWriter, mp MachinePower, err error) {
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, mp)
}

func (s *Server) machineBMCInfo(w http.ResponseWriter, r *http.Request) {
	mp, err := s.MachineBMC(r.Context(), r.PathValue("id"))
	s.answerPower(w, mp, err)
}

func (s *Server) power(w http.ResponseWriter, r *http.Request) {
	if _, err := s.machineBMC(r.PathValue("id")); err != nil {
		s.answer(w, err)
		return
	}
	var req PowerRequest
	if !decode(w, r, &req) {
		return
	}
	mp, err := s.Power(r.Context(), Actor(r), r.PathValue("id"), req.Action)
	s.answerPower(w, mp, err)
}

func (s *Server) boot(w http.ResponseWriter, r *http.Request) {
	if _, err := s.machineBMC(r.PathValue("id")); err != nil {
		s.answer(w, err)
		return
	}
	var req BootRequest
	if !decode(w, r, &req) {
		return
	}
	mp, err := s.Boot(r.Context(), Actor(r), r.PathValue("id"), req.Target, req.URI)
	s.answerPower(w, mp, err)
}

func (s *Server) listBMCs(w http.ResponseWriter, r *http.Request) {
	out := []BMCInfo{}
	if s.bmcs != nil {
		for _, n := range s.bmcs.Names() {
			out = append(out, BMCInfo{Name: n, Health: s.health(n)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getBMC(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.bmcs == nil {
		fail(w, http.StatusNotFound, "name", "no BMC named %q: none are configured", name)
		return
	}
	systems, err := s.bmcs.Systems(r.Context(), name)
	if err != nil {
		s.answer(w, s.powerProblem("name", err))
		return
	}
	info := BMCInfo{Name: name, Health: s.health(name), Systems: []BMCSystem{}}
	for _, sys := range systems {
		info.Systems = append(info.Systems, SystemView(sys))
	}
	writeJSON(w, http.StatusOK, info)
}
