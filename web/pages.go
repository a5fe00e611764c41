package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// chassisData is the chassis page: the map, the counts, the table and the unknown clients.
type chassisData struct {
	Filter  Filter
	Errors  map[string]string // a filter the URL named that does not exist
	Counts  Counts
	Chassis []Chassis
	Rows    []Row // every machine, in the table's order (the filter hides what it does not select)
	Shown   int   // how many the filter selects
	Unknown []machines.Unknown
}

// fleet is the chassis page's live part for filter f.
func (s *Server) fleet(f Filter) chassisData {
	rows := s.rows(s.d.API.Views())
	d := chassisData{Filter: f, Counts: countRows(rows), Chassis: layout(rows)}
	for _, r := range rows {
		if f.Match(r) {
			d.Shown++
		}
	}
	sortRows(rows, f)
	d.Rows = rows
	return d
}

func (s *Server) chassisPage(w http.ResponseWriter, r *http.Request, v viewer) {
	f, errs := parseFilter(r.URL.Query())
	d := s.fleet(f)
	d.Errors = errs
	us, err := s.d.Inventory.Unknowns()
	if err != nil {
		s.log.Warn("cannot read the unknown clients", "err", err)
	}
	d.Unknown = us
	status := http.StatusOK
	if len(errs) > 0 {
		status = http.StatusBadRequest
	}
	s.render(w, r, status, "chassis", page{Title: "Chassis", Nav: "chassis", Viewer: v, Live: liveURL("chassis", r.URL.Query()), Data: d})
}

// liveURL is the event stream of a page: its view and its own query.
func liveURL(view string, q url.Values) string {
	q2 := url.Values{}
	for k, vs := range q {
		q2[k] = slices.Clone(vs)
	}
	q2.Set("view", view)
	return StreamPath + "?" + q2.Encode()
}

// step is one phase of a job's stepper.
type step struct {
	Phase      jobs.Phase
	Status     string // done, current, failed, cancelled, pending
	Start, End time.Time
}

// Duration is how long the phase took, or has taken so far.
func (st step) Duration() time.Duration {
	if st.Start.IsZero() {
		return 0
	}
	end := st.End
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(st.Start).Round(time.Second)
}

// steps are j's phases in order, each with its latest timing.
func steps(j *jobs.Job) []step {
	if j == nil {
		return nil
	}
	var out []step
	reached := true
	for _, p := range j.Kind.Phases() {
		st := step{Phase: p, Status: "pending"}
		for i := len(j.Phases) - 1; i >= 0; i-- {
			if j.Phases[i].Phase == p {
				st.Start, st.End = j.Phases[i].Start, j.Phases[i].End
				break
			}
		}
		switch {
		case p == j.Phase && j.State == jobs.StateFailed:
			st.Status, reached = "failed", false
		case p == j.Phase && j.State == jobs.StateCancelled:
			st.Status, reached = "cancelled", false
		case p == j.Phase && j.State == jobs.StateSucceeded:
			st.Status, reached = "done", false
		case p == j.Phase:
			st.Status, reached = "current", false
		case reached:
			st.Status = "done"
		}
		out = append(out, st)
	}
	return out
}

// machineData is a machine's page.
type machineData struct {
	Row       Row
	View      api.MachineView
	BMC       *api.MachinePower
	BMCError  string
	PowerRead time.Time
	Assigned  string // name@version of the assigned image
	Current   string // … of the current one
	Behind    bool   // it follows a channel that has moved on
	live      machineLive
	History   []jobs.Job
	Images    []string // what the reimage field suggests: every name@channel and name@version
	Form      formError
}

// machineLive is the machine page's live part: its state, its job and its timeline.
type machineLive struct {
	Row    Row
	Job    *jobs.Job
	Steps  []step
	Events []machines.Event
}

// Live is the page's live part.
func (d machineData) Live() machineLive { return d.live }

// formError is an action's refusal, shown beside the field it names in the form it names.
type formError struct {
	Form, Field, Msg string
}

// For is the message of form's field ("" for another form or field).
func (e formError) For(form, field string) string {
	if e.Form == form && e.Field == field {
		return e.Msg
	}
	return ""
}

// General is the message of form not tied to one of its fields.
func (e formError) General(form string, fields ...string) string {
	if e.Form == form && !slices.Contains(fields, e.Field) {
		return e.Msg
	}
	return ""
}

const timelineLength = 100

// machineLiveOf is machine id's live part, as the page and its stream show it.
func (s *Server) machineLiveOf(id string) (machineLive, bool) {
	v, err := s.d.API.View(id)
	if err != nil {
		return machineLive{}, false
	}
	behind, _ := s.d.Inventory.BehindChannel()
	l := machineLive{Row: s.row(v, s.imageNames(), behind)}
	l.Job = l.Row.Job
	l.Steps = steps(l.Job)
	ev, err := s.d.Inventory.Events(id, 0)
	if err != nil {
		s.log.Warn("cannot read a machine's events", "machine", id, "err", err)
	}
	if len(ev) > timelineLength {
		ev = ev[len(ev)-timelineLength:]
	}
	slices.Reverse(ev)
	l.Events = ev
	return l, true
}

func (s *Server) machinePage(w http.ResponseWriter, r *http.Request, v viewer) {
	s.showMachine(w, r, v, http.StatusOK, formError{})
}

// showMachine renders machine {id}'s page with status and a form's error, if any.
func (s *Server) showMachine(w http.ResponseWriter, r *http.Request, v viewer, status int, fe formError) {
	id := r.PathValue("id")
	view, err := s.d.API.MachineDetail(r.Context(), id)
	if err != nil {
		s.notFound(w, r, v, "There is no machine "+id+" in the inventory.")
		return
	}
	live, _ := s.machineLiveOf(id)
	d := machineData{Row: live.Row, View: view, live: live, Form: fe}
	names := s.imageNames()
	d.Assigned = names[view.AssignedImage]
	d.Current = names[view.CurrentImage]
	behind, _ := s.d.Inventory.BehindChannel()
	d.Behind = behind[id]
	if view.BMC != "" {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		mp, err := s.d.API.MachineBMC(ctx, id)
		cancel()
		d.PowerRead = time.Now()
		if err != nil {
			d.BMCError = err.Error()
		} else {
			d.BMC = &mp
		}
	}
	if s.d.Jobs != nil {
		d.History = s.d.Jobs.List(jobs.Filter{Machine: id, Limit: 20})
	}
	d.Images = s.imageChoices()
	s.render(w, r, status, "machine", page{Title: id, Nav: "chassis", Viewer: v, Live: liveURL("machine", url.Values{"id": {id}}), Data: d})
}

// imageChoices are the references a reimage field suggests: every name@channel, then every
// name@version.
func (s *Server) imageChoices() []string {
	imgs, chs, err := s.d.Catalog.List()
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range chs {
		out = append(out, c.Name+"@"+c.Channel)
	}
	for _, img := range imgs {
		out = append(out, img.Ref().String())
	}
	return out
}

// jobsData is the jobs page: failures first, then what runs or waits, then the rest.
type jobsData struct {
	NoJobs  bool
	Failed  []jobs.Job
	Active  []jobs.Job
	Recent  []jobs.Job
	Updated time.Time
}

// jobsOverview is the newest job of every machine and every unfinished one, read from memory.
func (s *Server) jobsOverview() jobsData {
	if s.d.Jobs == nil {
		return jobsData{NoJobs: true}
	}
	d := jobsData{Updated: time.Now()}
	for _, m := range s.d.Inventory.Machines() {
		j, ok := s.d.Jobs.Latest(m.ID)
		switch {
		case !ok:
		case !j.State.Done():
			d.Active = append(d.Active, j)
		case j.State == jobs.StateFailed:
			d.Failed = append(d.Failed, j)
		default:
			d.Recent = append(d.Recent, j)
		}
	}
	newest := func(a, b jobs.Job) int { return strings.Compare(b.ID, a.ID) }
	slices.SortFunc(d.Failed, newest)
	slices.SortFunc(d.Recent, newest)
	// What runs first (by phase, the furthest along first), then the queue in its order.
	slices.SortFunc(d.Active, func(a, b jobs.Job) int {
		if (a.State == jobs.StateQueued) != (b.State == jobs.StateQueued) {
			if a.State == jobs.StateQueued {
				return 1
			}
			return -1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return d
}

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request, v viewer) {
	s.render(w, r, http.StatusOK, "jobs", page{Title: "Jobs", Nav: "jobs", Viewer: v, Live: liveURL("jobs", nil), Data: s.jobsOverview()})
}

// jobData is a job's page.
type jobData struct {
	Job   jobs.Job
	Steps []step
	Form  formError
}

// CanRetry reports whether the job may be retried (it failed).
func (d jobData) CanRetry() bool { return d.Job.State == jobs.StateFailed }

// CanCancel reports whether the job may be cancelled (it has not finished).
func (d jobData) CanCancel() bool { return !d.Job.State.Done() }

// Progress is the job's write progress, if it writes.
func (d jobData) Progress() *Progress {
	if d.Job.Phase == jobs.PhaseWriting && !d.Job.State.Done() && d.Job.Progress != nil && d.Job.Progress.BytesTotal > 0 {
		return progressOf(d.Job.Progress)
	}
	return nil
}

func (s *Server) jobOf(id string) (jobData, bool) {
	if s.d.Jobs == nil {
		return jobData{}, false
	}
	j, ok := s.d.Jobs.Get(id)
	if !ok {
		return jobData{}, false
	}
	tl := slices.Clone(j.Timeline)
	slices.Reverse(tl)
	j.Timeline = tl
	return jobData{Job: j, Steps: steps(&j)}, true
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, v viewer) {
	s.showJob(w, r, v, http.StatusOK, formError{})
}

func (s *Server) showJob(w http.ResponseWriter, r *http.Request, v viewer, status int, fe formError) {
	id := r.PathValue("id")
	d, ok := s.jobOf(id)
	if !ok {
		s.notFound(w, r, v, "There is no job "+id+".")
		return
	}
	d.Form = fe
	s.render(w, r, status, "job", page{Title: "Job " + id, Nav: "jobs", Viewer: v, Live: liveURL("job", url.Values{"id": {id}}), Data: d})
}

// imagesData is the images page: every name, its versions and its channels.
type imagesData struct {
	Names []imageName
	Form  formError
}

type imageName struct {
	Name     string
	Versions []imageVersion
	Channels []images.Channel
}

type imageVersion struct {
	Image    images.Image
	Running  int      // machines verified to run it
	Assigned int      // machines assigned it
	Channels []string // the channels that point at it
}

func (s *Server) imagesOverview() (imagesData, error) {
	imgs, chs, err := s.d.Catalog.List()
	if err != nil {
		return imagesData{}, err
	}
	running, assigned := map[images.Digest]int{}, map[images.Digest]int{}
	for _, m := range s.d.Inventory.Machines() {
		if !m.CurrentImage.IsZero() {
			running[m.CurrentImage]++
		}
		if !m.AssignedImage.IsZero() {
			assigned[m.AssignedImage]++
		}
	}
	var d imagesData
	byName := map[string]*imageName{}
	for _, img := range imgs {
		n := byName[img.Name]
		if n == nil {
			d.Names = append(d.Names, imageName{Name: img.Name})
			n = &d.Names[len(d.Names)-1]
			byName[img.Name] = n
		}
		n.Versions = append(n.Versions, imageVersion{Image: img, Running: running[img.Digest], Assigned: assigned[img.Digest]})
	}
	// byName's pointers moved as d.Names grew: index again.
	for i := range d.Names {
		byName[d.Names[i].Name] = &d.Names[i]
	}
	for _, c := range chs {
		n := byName[c.Name]
		if n == nil {
			continue
		}
		ch := c
		slices.Reverse(ch.History) // newest first
		n.Channels = append(n.Channels, ch)
		for i := range n.Versions {
			if n.Versions[i].Image.Version == c.Version {
				n.Versions[i].Channels = append(n.Versions[i].Channels, c.Channel)
			}
		}
	}
	for i := range d.Names {
		slices.Reverse(d.Names[i].Versions) // newest import first
	}
	return d, nil
}

func (s *Server) imagesPage(w http.ResponseWriter, r *http.Request, v viewer) {
	s.showImages(w, r, v, http.StatusOK, formError{})
}

func (s *Server) showImages(w http.ResponseWriter, r *http.Request, v viewer, status int, fe formError) {
	d, err := s.imagesOverview()
	if err != nil {
		s.log.Error("web: images", "err", err)
		s.render(w, r, http.StatusInternalServerError, "error", page{Title: "Error", Viewer: v, Data: errorPage{Status: 500, Msg: "The catalog could not be read; see imaged's log."}})
		return
	}
	d.Form = fe
	s.render(w, r, status, "images", page{Title: "Images", Nav: "images", Viewer: v, Data: d})
}
