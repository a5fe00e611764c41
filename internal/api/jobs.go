package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// Jobs is what the API asks of the reimage jobs.
type Jobs interface {
	Submit(ctx context.Context, req jobs.Request) (jobs.Job, error)
	Cancel(id, by string) (jobs.Job, error)
	Get(id string) (jobs.Job, bool)
	List(f jobs.Filter) []jobs.Job
	Observe(machine string, s jobs.Signal)
	CheckIn(machine string, digest images.Digest) (machines.CheckIn, error)
	LastCheckIn(machine string) (machines.CheckIn, bool)
	Latest(machine string) (jobs.Job, bool)
}

// ReimageRequest asks for a machine to be reimaged (and proven to run the image).
type ReimageRequest struct {
	Image string      `json:"image"` // name@channel, name@version or sha256:<hex>
	Probe *jobs.Probe `json:"probe,omitempty"`
}

// RebootRequest asks for a machine to be restarted into its disk and proven ready.
type RebootRequest struct {
	Probe *jobs.Probe `json:"probe,omitempty"`
}

// CancelReply is the job after a cancel.
type CancelReply = jobs.Job

// RollerTask is Roller's answer for a forwarded task.
type RollerTask struct {
	TaskName    string `json:"task_name"`
	WorkerID    string `json:"worker_id"`
	WorkerGroup string `json:"worker_group"`
	TaskID      string `json:"task_id"`
}

// Metadata is what a booted machine learns about itself from GET /api/v1/metadata: the published
// contract, so that nothing has to guess a machine's role.
type Metadata struct {
	MachineID     string        `json:"machine_id"`
	Hostname      string        `json:"hostname,omitempty"`
	WorkerGroup   string        `json:"worker_group,omitempty"`
	WorkerType    string        `json:"worker_type,omitempty"`
	Chassis       string        `json:"chassis,omitempty"`
	Slot          int           `json:"slot,omitempty"`
	AssignedImage images.Digest `json:"assigned_image,omitzero"`
	CurrentImage  images.Digest `json:"current_image,omitzero"`
}

// CheckInRequest is a booted machine saying which image it runs. The digest is read in the
// handler, so that an error names the field.
type CheckInRequest struct {
	Digest string `json:"digest"`
}

func (s *Server) registerJobs(mux *http.ServeMux) {
	s.route(mux, "POST /api/v1/machines/{id}/reimage", ScopeOperate, s.reimage)
	s.route(mux, "POST /api/v1/machines/{id}/reboot", ScopeOperate, s.reboot)
	s.route(mux, "GET /api/v1/jobs", ScopeRead, s.listJobs)
	s.route(mux, "GET /api/v1/jobs/{id}", ScopeRead, s.getJob)
	s.route(mux, "POST /api/v1/jobs/{id}/cancel", ScopeOperate, s.cancelJob)
	s.route(mux, "POST /api/v1/jobs/{id}/retry", ScopeOperate, s.retryJob)
	s.route(mux, "POST /api/v1/workers/{worker_id}/group/{worker_group}/jobs", ScopeOperate, s.rollerTask)
	s.route(mux, "GET /api/v1/metadata", ScopeNone, s.metadata)
	s.route(mux, "POST /api/v1/check-in", ScopeNone, s.checkIn)
}

// jobProblem is a jobs error as the API answers it.
func (s *Server) jobProblem(field string, err error) error {
	switch {
	case errors.Is(err, jobs.ErrBusy), errors.Is(err, jobs.ErrFinished):
		return problem(http.StatusConflict, "id", "%v", err)
	case errors.Is(err, jobs.ErrNotFound), errors.Is(err, jobs.ErrUnknownMachine):
		return problem(http.StatusNotFound, "id", "%v", err)
	case errors.Is(err, jobs.ErrInvalid):
		return problem(http.StatusBadRequest, field, "%v", err)
	}
	s.log.Error("jobs", "err", err)
	return problem(http.StatusInternalServerError, "", "the job could not be recorded; see imaged's log")
}

// keepChannel: a reimage with the very image a machine is assigned (Roller's reimage without
// ?image=, jobs.reimage_stale) keeps the channel the machine follows, so that the job's
// assignment does not quietly pin the machine to that version.
func keepChannel(m machines.Machine, img *images.Image) {
	if img.Channel == "" && img.Digest == m.AssignedImage {
		img.Channel = m.AssignedChannel
	}
}

// accepted answers a submitted job: 202 and where to follow it.
func accepted(w http.ResponseWriter, j jobs.Job) {
	w.Header().Set("Location", "/api/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, j)
}

func (s *Server) reimage(w http.ResponseWriter, r *http.Request) {
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	var req ReimageRequest
	if !decode(w, r, &req) {
		return
	}
	j, err := s.Reimage(r.Context(), Actor(r), r.PathValue("id"), req.Image, req.Probe)
	if err != nil {
		s.answer(w, err)
		return
	}
	accepted(w, j)
}

func (s *Server) reboot(w http.ResponseWriter, r *http.Request) {
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	var req RebootRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	j, err := s.Reboot(r.Context(), Actor(r), r.PathValue("id"), req.Probe)
	if err != nil {
		s.answer(w, err)
		return
	}
	accepted(w, j)
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	q := r.URL.Query()
	f := jobs.Filter{Machine: q.Get("machine")}
	if v := q.Get("active"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail(w, http.StatusBadRequest, "active", "%q is not true or false", v)
			return
		}
		f.Active = b
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fail(w, http.StatusBadRequest, "limit", "%q is not a count", v)
			return
		}
		f.Limit = n
	}
	if f.Machine != "" {
		if _, ok := s.knownMachine(w, "machine", f.Machine); !ok {
			return
		}
	}
	out := s.jobs.List(f)
	if out == nil {
		out = []jobs.Job{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	j, ok := s.jobs.Get(r.PathValue("id"))
	if !ok {
		fail(w, http.StatusNotFound, "id", "no job %q", r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.CancelJob(Actor(r), r.PathValue("id"))
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.RetryJob(r.Context(), Actor(r), r.PathValue("id"))
	if err != nil {
		s.answer(w, err)
		return
	}
	accepted(w, j)
}

// rollerTask takes Roller's actions unchanged: POST
// /api/v1/workers/{worker_id}/group/{worker_group}/jobs?task_name=reimage|reboot|ping. The
// worker id is the machine id; a group that is not the machine's worker group is refused, so a
// forwarded action never lands on the wrong machine. reimage writes the machine's assigned
// image (or ?image=).
func (s *Server) rollerTask(w http.ResponseWriter, r *http.Request) {
	id, group := r.PathValue("worker_id"), r.PathValue("worker_group")
	task := r.URL.Query().Get("task_name")
	m, ok := s.knownMachine(w, "worker_id", id)
	if !ok {
		return
	}
	if m.WorkerGroup != group {
		fail(w, http.StatusConflict, "worker_group", "machine %s is in worker group %q, not %q", id, m.WorkerGroup, group)
		return
	}
	reply := RollerTask{TaskName: task, WorkerID: id, WorkerGroup: group}
	switch task {
	case "ping":
		// Roller's liveness check of the worker: answered here; no job.
		reply.TaskID = "ping-" + id
		writeJSON(w, http.StatusOK, reply)
		return
	case "reimage", "reboot":
	default:
		fail(w, http.StatusBadRequest, "task_name", "%q is not a task (reimage, reboot or ping)", task)
		return
	}
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	j, err := s.rollerJob(r, m, task)
	if err != nil {
		s.answer(w, err)
		return
	}
	reply.TaskID = j.ID
	writeJSON(w, http.StatusOK, reply)
}

// rollerJob submits Roller's reimage (of the machine's assigned image, or ?image=) or reboot.
func (s *Server) rollerJob(r *http.Request, m machines.Machine, task string) (jobs.Job, error) {
	if task == "reboot" {
		return s.Reboot(r.Context(), Actor(r), m.ID, nil)
	}
	ref := r.URL.Query().Get("image")
	if ref == "" && m.AssignedImage.IsZero() {
		return jobs.Job{}, problem(http.StatusConflict, "image", "machine %s has no assigned image; give ?image=name@channel", m.ID)
	}
	if err := s.needBMC(m.ID); err != nil {
		return jobs.Job{}, err
	}
	var img images.Image
	var err error
	if ref == "" {
		img, err = s.resolveRef("image", images.Ref{Digest: m.AssignedImage})
	} else {
		img, err = s.resolve("image", ref)
	}
	if err != nil {
		return jobs.Job{}, err
	}
	return s.submitReimage(r.Context(), Actor(r), m, img, nil)
}

// caller finds the machine a metadata or check-in request comes from by its source address,
// as a cloud metadata service does: the address imaged leased or reserved for it.
func (s *Server) caller(w http.ResponseWriter, r *http.Request) (machines.Machine, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		fail(w, http.StatusBadRequest, "", "cannot tell the caller's address")
		return machines.Machine{}, false
	}
	m, ok := s.inv.ByAddr(ap.Addr().Unmap())
	if !ok {
		fail(w, http.StatusNotFound, "", "no machine in the inventory has the address %s (metadata is served only to machines imaged gave an address)", ap.Addr().Unmap())
		return m, false
	}
	return m, true
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	m, ok := s.caller(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, Metadata{MachineID: m.ID, Hostname: m.Hostname, WorkerGroup: m.WorkerGroup, WorkerType: m.WorkerType,
		Chassis: m.Chassis, Slot: m.Slot, AssignedImage: m.AssignedImage, CurrentImage: m.CurrentImage})
}

func (s *Server) checkIn(w http.ResponseWriter, r *http.Request) {
	m, ok := s.caller(w, r)
	if !ok {
		return
	}
	var req CheckInRequest
	if !decode(w, r, &req) {
		return
	}
	d, err := images.ParseDigest(req.Digest)
	if err != nil {
		fail(w, http.StatusBadRequest, "digest", "%v", err)
		return
	}
	if err := s.jobsRunning(); err != nil {
		s.answer(w, err)
		return
	}
	c, err := s.jobs.CheckIn(m.ID, d)
	if err != nil {
		s.answer(w, s.jobProblem("digest", err))
		return
	}
	if c.Stale {
		s.log.Warn("machine checked in with an image other than its assigned one", "machine", m.ID, "digest", d, "assigned", m.AssignedImage)
		s.reimageStale(r, m)
	}
	writeJSON(w, http.StatusOK, c)
}

// reimageStale applies jobs.reimage_stale: a machine that runs another image than its assigned
// one is reimaged with it (unless a job already has it, or it cannot be powered).
func (s *Server) reimageStale(r *http.Request, m machines.Machine) {
	if !s.stalePolicy || m.AssignedImage.IsZero() || s.bmcs == nil || s.bmcs.BMCName(m.ID) == "" {
		return
	}
	img, err := s.catalog.Resolve(images.Ref{Digest: m.AssignedImage})
	if err != nil {
		s.log.Warn("stale machine not reimaged: its assigned image is not in the catalog", "machine", m.ID, "assigned", m.AssignedImage, "err", err)
		return
	}
	keepChannel(m, &img)
	j, err := s.jobs.Submit(r.Context(), jobs.Request{Kind: jobs.KindReimage, Machine: m.ID, Image: img, By: "policy jobs.reimage_stale"})
	switch {
	case errors.Is(err, jobs.ErrBusy):
	case err != nil:
		s.log.Warn("stale machine not reimaged", "machine", m.ID, "err", err)
	default:
		s.log.Info("stale machine: reimage submitted", "machine", m.ID, "job", j.ID, "image", img.Ref())
	}
}
