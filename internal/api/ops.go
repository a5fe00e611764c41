package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// The operator API's operations, with typed arguments and the Principal that acts: the JSON
// handlers decode a request, call one and encode its answer; the dashboard (internal/web) calls
// the same ones from its forms. Each checks the scope it needs, the machine, the image and the
// state the rules require, and records the change with the Principal's name, so that the rules
// are written once whoever asks.

// Problem is why an operation refused or failed, as the API answers it: the HTTP status (chosen
// here and nowhere else), the field of the request at fault ("" when none is), and what to do
// about it. Every operation's error is a *Problem.
type Problem struct {
	Status     int
	Field      string
	Msg        string
	RetryAfter int // seconds to wait before trying again (a BMC's open breaker); 0: none
}

func (p *Problem) Error() string { return p.Msg }

func problem(status int, field, format string, args ...any) *Problem {
	return &Problem{Status: status, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// AsProblem is err as a Problem; an error that is none (a bug: operations return Problems) is a
// 500 that says to look at imaged's log.
func AsProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	return &Problem{Status: http.StatusInternalServerError, Msg: "internal error; see imaged's log"}
}

// answer writes err as the API's JSON error.
func (s *Server) answer(w http.ResponseWriter, err error) {
	var p *Problem
	if !errors.As(err, &p) {
		s.log.Error("api", "err", err)
	}
	p = AsProblem(err)
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	fail(w, p.Status, p.Field, "%s", p.Msg)
}

// need refuses p an operation that needs scope: 401 without credentials, 403 with too small a
// scope (what require answers at the route, for callers that come another way).
func need(p Principal, scope Scope) error {
	switch {
	case p.Scope >= scope:
		return nil
	case p.Anonymous || p.Name == "":
		return problem(http.StatusUnauthorized, "", "this request needs the %s scope: a token (Authorization: Bearer …; see api.tokens), or imaged's control socket", scope)
	}
	return problem(http.StatusForbidden, "", "%s has the %s scope; this request needs %s", p.Name, p.Scope, scope)
}

// Actor is who r acts as: its Principal, named as its changes are recorded (on the control
// socket, with the operator the CLI names).
func Actor(r *http.Request) Principal {
	p, _ := principalOf(r)
	p.Name = by(r)
	return p
}

// machineOf is machine id of the inventory; field names where the id came from.
func (s *Server) machineOf(field, id string) (machines.Machine, error) {
	m, ok := s.inv.Machine(id)
	if !ok {
		return m, problem(http.StatusNotFound, field, "no machine %q in the inventory", id)
	}
	return m, nil
}

// jobsRunning refuses what needs the jobs where none run (the CLI's in-process API).
func (s *Server) jobsRunning() error {
	if s.jobs == nil {
		return problem(http.StatusServiceUnavailable, "", "reimage jobs are not running in this imaged")
	}
	return nil
}

// needBMC refuses a job for a machine imaged cannot power: jobs drive machines through their BMC.
func (s *Server) needBMC(id string) error {
	if s.bmcs == nil || s.bmcs.BMCName(id) == "" {
		return problem(http.StatusConflict, "id", "machine %s has no BMC configured (machines[].bmc): imaged powers machines through their BMC to reimage them", id)
	}
	return nil
}

// Reimage submits a reimage of machine with the image text names (name@channel, name@version or
// sha256:<hex>), proven ready by probe (nil: the machine's, else the default).
func (s *Server) Reimage(ctx context.Context, p Principal, machine, image string, probe *jobs.Probe) (jobs.Job, error) {
	if err := need(p, ScopeOperate); err != nil {
		return jobs.Job{}, err
	}
	if err := s.jobsRunning(); err != nil {
		return jobs.Job{}, err
	}
	m, err := s.machineOf("id", machine)
	if err != nil {
		return jobs.Job{}, err
	}
	if err := s.needBMC(machine); err != nil {
		return jobs.Job{}, err
	}
	if image == "" {
		return jobs.Job{}, problem(http.StatusBadRequest, "image", "the image is required: name@channel, name@version or sha256:<hex>")
	}
	img, err := s.resolve("image", image)
	if err != nil {
		return jobs.Job{}, err
	}
	return s.submitReimage(ctx, p, m, img, probe)
}

// submitReimage submits a reimage of m with img, found in the catalog.
func (s *Server) submitReimage(ctx context.Context, p Principal, m machines.Machine, img images.Image, probe *jobs.Probe) (jobs.Job, error) {
	keepChannel(m, &img)
	j, err := s.jobs.Submit(ctx, jobs.Request{Kind: jobs.KindReimage, Machine: m.ID, Image: img, By: p.Name, Probe: probe})
	if err != nil {
		return j, s.jobProblem("probe", err)
	}
	s.log.Info("reimage submitted", "job", j.ID, "machine", m.ID, "image", img.Ref(), "digest", img.Digest, "by", j.By)
	return j, nil
}

// Reboot submits a restart of machine into its disk, proven ready by probe.
func (s *Server) Reboot(ctx context.Context, p Principal, machine string, probe *jobs.Probe) (jobs.Job, error) {
	if err := need(p, ScopeOperate); err != nil {
		return jobs.Job{}, err
	}
	if err := s.jobsRunning(); err != nil {
		return jobs.Job{}, err
	}
	if _, err := s.machineOf("id", machine); err != nil {
		return jobs.Job{}, err
	}
	if err := s.needBMC(machine); err != nil {
		return jobs.Job{}, err
	}
	j, err := s.jobs.Submit(ctx, jobs.Request{Kind: jobs.KindReboot, Machine: machine, By: p.Name, Probe: probe})
	if err != nil {
		return j, s.jobProblem("probe", err)
	}
	return j, nil
}

// CancelJob asks job id to stop (see jobs.Manager.Cancel).
func (s *Server) CancelJob(p Principal, id string) (jobs.Job, error) {
	if err := need(p, ScopeOperate); err != nil {
		return jobs.Job{}, err
	}
	if err := s.jobsRunning(); err != nil {
		return jobs.Job{}, err
	}
	j, err := s.jobs.Cancel(id, p.Name)
	if err != nil {
		return j, s.jobProblem("id", err)
	}
	return j, nil
}

// RetryJob submits again what failed job id asked for: the same kind of job on the same machine
// with the same readiness probe; a reimage with the image it named, found again in the catalog
// (through its channel when it named one, so that a channel moved since is followed).
func (s *Server) RetryJob(ctx context.Context, p Principal, id string) (jobs.Job, error) {
	if err := need(p, ScopeOperate); err != nil {
		return jobs.Job{}, err
	}
	if err := s.jobsRunning(); err != nil {
		return jobs.Job{}, err
	}
	old, ok := s.jobs.Get(id)
	if !ok {
		return jobs.Job{}, problem(http.StatusNotFound, "id", "no job %q", id)
	}
	if old.State != jobs.StateFailed {
		return old, problem(http.StatusConflict, "id", "job %s is %s: only a failed job is retried", id, old.State)
	}
	p.Name = fmt.Sprintf("%s, retrying job %s", p.Name, id)
	probe := old.Probe
	if old.Kind == jobs.KindReboot {
		return s.Reboot(ctx, p, old.Machine, &probe)
	}
	m, err := s.machineOf("id", old.Machine)
	if err != nil {
		return jobs.Job{}, err
	}
	if err := s.needBMC(m.ID); err != nil {
		return jobs.Job{}, err
	}
	if old.Image == nil {
		return jobs.Job{}, problem(http.StatusConflict, "id", "job %s names no image to write again", id)
	}
	ref := old.Image.Ref()
	if old.Image.Channel != "" {
		if ref, err = images.ParseRef(old.Image.Channel); err != nil {
			return jobs.Job{}, problem(http.StatusConflict, "id", "job %s names channel %q: %v", id, old.Image.Channel, err)
		}
	}
	img, err := s.resolveRef("id", ref)
	if err != nil {
		return jobs.Job{}, err
	}
	return s.submitReimage(ctx, p, m, img, &probe)
}

// Assign makes the image text names the one machine is to run.
func (s *Server) Assign(p Principal, machine, image string) (AssignReply, error) {
	if err := need(p, ScopeOperate); err != nil {
		return AssignReply{}, err
	}
	if _, err := s.machineOf("id", machine); err != nil {
		return AssignReply{}, err
	}
	if image == "" {
		return AssignReply{}, problem(http.StatusBadRequest, "image", "the image to assign is required: name@version, name@channel or sha256:<hex>")
	}
	img, err := s.resolve("image", image)
	if err != nil {
		return AssignReply{}, err
	}
	m, err := s.inv.Assign(machine, img, p.Name)
	if err != nil {
		return AssignReply{}, s.catalogProblem("id", err)
	}
	return AssignReply{Machine: m, Image: img}, nil
}

// Power performs action (on, off, shutdown, restart, graceful-restart, cycle) on machine through
// its BMC and answers the system as read back.
func (s *Server) Power(ctx context.Context, p Principal, machine, action string) (MachinePower, error) {
	if err := need(p, ScopeOperate); err != nil {
		return MachinePower{}, err
	}
	bmc, err := s.machineBMC(machine)
	if err != nil {
		return MachinePower{}, err
	}
	a, err := power.ParseAction(action)
	if err != nil {
		return MachinePower{}, problem(http.StatusBadRequest, "action", "%v", err)
	}
	if err := s.bmcs.Power(ctx, machine, a); err != nil {
		return MachinePower{}, s.powerProblem("action", err)
	}
	s.inv.Event(machines.Event{Machine: machine, Kind: "power", Message: "power " + string(a) + " (read back) by " + p.Name})
	return s.machinePower(ctx, machine, bmc)
}

// Boot sets machine's next boot, once: pxe, disk, uefi-http (with uri) or none.
func (s *Server) Boot(ctx context.Context, p Principal, machine, target, uri string) (MachinePower, error) {
	if err := need(p, ScopeOperate); err != nil {
		return MachinePower{}, err
	}
	bmc, err := s.machineBMC(machine)
	if err != nil {
		return MachinePower{}, err
	}
	t, err := power.ParseBootTarget(target)
	if err != nil {
		return MachinePower{}, problem(http.StatusBadRequest, "target", "%v", err)
	}
	if (t == power.UefiHttp) != (uri != "") {
		return MachinePower{}, problem(http.StatusBadRequest, "uri", "a uri is needed for uefi-http and only for it")
	}
	if err := s.bmcs.BootOnce(ctx, machine, t, uri); err != nil {
		return MachinePower{}, s.powerProblem("target", err)
	}
	s.inv.Event(machines.Event{Machine: machine, Kind: "power", Message: "next boot once from " + string(t) + " (read back) by " + p.Name})
	return s.machinePower(ctx, machine, bmc)
}

// Promote points channel at the image ref names (NAME@VERSION).
func (s *Server) Promote(p Principal, ref, channel string) (images.Channel, error) {
	if err := need(p, ScopeOperate); err != nil {
		return images.Channel{}, err
	}
	r, err := parseRef("ref", ref, "NAME@VERSION")
	if err != nil {
		return images.Channel{}, err
	}
	if _, err := images.ParseRef(r.Name + "@" + channel); err != nil || channel == "" {
		return images.Channel{}, problem(http.StatusBadRequest, "channel", "%q is not a channel name (letters, digits, . _ - +)", channel)
	}
	ch, err := s.catalog.Promote(r, channel, p.Name)
	if err != nil {
		return ch, s.catalogProblem("ref", err)
	}
	return ch, nil
}

// Rollback moves the channel ref names (NAME@CHANNEL) back to its version before the current one.
func (s *Server) Rollback(p Principal, ref string) (images.Channel, error) {
	if err := need(p, ScopeOperate); err != nil {
		return images.Channel{}, err
	}
	r, err := parseRef("ref", ref, "NAME@CHANNEL")
	if err != nil {
		return images.Channel{}, err
	}
	ch, err := s.catalog.Rollback(r, p.Name)
	if err != nil {
		return ch, s.catalogProblem("ref", err)
	}
	return ch, nil
}

// Views are every machine with what the daemon knows of it beyond the inventory, sorted by id.
func (s *Server) Views() []MachineView {
	ms := s.inv.Machines()
	out := make([]MachineView, 0, len(ms))
	for _, m := range ms {
		out = append(out, s.view(m))
	}
	return out
}

// MachineDetail is one machine's view with its power and health as its BMC reads them now
// (bounded: a BMC that does not answer within 5 s leaves the power unknown, with why).
func (s *Server) MachineDetail(ctx context.Context, id string) (MachineView, error) {
	m, err := s.machineOf("id", id)
	if err != nil {
		return MachineView{}, err
	}
	v := s.view(m)
	if s.bmcs != nil && s.bmcs.BMCName(m.ID) != "" {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		sys, err := s.bmcs.System(ctx, m.ID)
		cancel()
		if err == nil {
			v.Power, v.Health = string(sys.Power), sys.Health
		} else {
			v.Power = "unknown: " + err.Error()
		}
	}
	return v, nil
}

// MachineBMC is machine id's system as its BMC reads it now, with the BMC's breaker.
func (s *Server) MachineBMC(ctx context.Context, id string) (MachinePower, error) {
	bmc, err := s.machineBMC(id)
	if err != nil {
		return MachinePower{}, err
	}
	return s.machinePower(ctx, id, bmc)
}

// Resolve finds the image text names (name@channel, name@version or sha256:<hex>) as a
// reimage or an assignment would; field names where text came from.
func (s *Server) Resolve(field, text string) (images.Image, error) {
	if text == "" {
		return images.Image{}, problem(http.StatusBadRequest, field, "the image is required: name@channel, name@version or sha256:<hex>")
	}
	return s.resolve(field, text)
}

// View is machine id with what the daemon knows of it beyond the inventory (no BMC call).
func (s *Server) View(id string) (MachineView, error) {
	m, err := s.machineOf("id", id)
	if err != nil {
		return MachineView{}, err
	}
	return s.view(m), nil
}
