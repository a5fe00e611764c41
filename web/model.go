package web

import (
	"cmp"
	"html/template"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/jobs"
)

// State is what a machine is doing or needs, as the dashboard shows it: one word and one glyph,
// never a colour alone.
type State string

// States, in the order the counts show them.
const (
	StateRunning    State = "running"    // a job runs (or is stopping)
	StateQueued     State = "queued"     // a job waits for a slot
	StateFailed     State = "failed"     // its newest job failed
	StateBehind     State = "behind"     // it does not run its assigned image (or its channel moved on)
	StateReady      State = "ready"      // it runs its assigned image
	StateUnassigned State = "unassigned" // no image is assigned
)

// States lists every state in display order.
var States = []State{StateRunning, StateQueued, StateFailed, StateBehind, StateReady, StateUnassigned}

// Glyph is the state's symbol, shown beside its word.
func (s State) Glyph() string {
	switch s {
	case StateRunning:
		return "▶"
	case StateQueued:
		return "◷"
	case StateFailed:
		return "✕"
	case StateBehind:
		return "↻"
	case StateReady:
		return "✓"
	}
	return "○"
}

// Flags a machine may carry besides its state.
const (
	FlagStale    = "stale"    // its OS checked in with another image than its assigned one
	FlagDegraded = "degraded" // its BMC's breaker is open
)

// Row is one machine as the chassis map and the table show it.
type Row struct {
	ID          string
	Chassis     string
	Slot, Node  int
	WorkerGroup string
	State       State
	Job         *jobs.Job // the newest job, nil for none
	Phase       string    // the running job's phase, "" when none runs
	Progress    *Progress
	Image       string // the assigned image's name@version, "" when none
	Channel     string // the channel it follows, "" for none
	Stale       bool
	Degraded    bool
	NoBMC       bool
}

// Progress is a writing job's progress.
type Progress struct {
	Done, Total int64
	Rate        float64 // bytes per second
	ETA         time.Duration
	Percent     int
}

// rows builds the rows of views: their newest jobs and the catalog's names for their images.
func (s *Server) rows(views []api.MachineView) []Row {
	byDigest := s.imageNames()
	behind, err := s.d.Inventory.BehindChannel()
	if err != nil {
		s.log.Warn("cannot read the channels", "err", err)
	}
	out := make([]Row, 0, len(views))
	for _, v := range views {
		out = append(out, s.row(v, byDigest, behind))
	}
	return out
}

// imageNames maps every catalog image's digest to its name@version.
func (s *Server) imageNames() map[images.Digest]string {
	imgs, _, err := s.d.Catalog.List()
	if err != nil {
		s.log.Warn("cannot read the catalog", "err", err)
	}
	out := make(map[images.Digest]string, len(imgs))
	for _, img := range imgs {
		if _, dup := out[img.Digest]; !dup {
			out[img.Digest] = img.Ref().String()
		}
	}
	return out
}

func (s *Server) row(v api.MachineView, names map[images.Digest]string, behind map[string]bool) Row {
	m := v.Machine
	r := Row{ID: m.ID, Chassis: m.Chassis, Slot: m.Slot, Node: m.Node, WorkerGroup: m.WorkerGroup, Channel: m.AssignedChannel, Stale: v.Stale,
		Degraded: v.BMCHealth != nil && v.BMCHealth.Degraded, NoBMC: m.BMC == ""}
	if r.Slot > 0 && r.Node == 0 {
		r.Node = 1
	}
	if !m.AssignedImage.IsZero() {
		r.Image = cmp.Or(names[m.AssignedImage], m.AssignedImage.String())
	}
	if s.d.Jobs != nil {
		if j, ok := s.d.Jobs.Latest(m.ID); ok {
			r.Job = &j
		}
	}
	switch j := r.Job; {
	case j != nil && j.State == jobs.StateQueued:
		r.State = StateQueued
	case j != nil && !j.State.Done():
		r.State, r.Phase = StateRunning, string(j.Phase)
		if j.Phase == jobs.PhaseWriting && j.Progress != nil && j.Progress.BytesTotal > 0 {
			r.Progress = progressOf(j.Progress)
		}
	case j != nil && j.State == jobs.StateFailed:
		r.State = StateFailed
	case m.AssignedImage.IsZero():
		r.State = StateUnassigned
	case m.CurrentImage != m.AssignedImage || behind[m.ID]:
		r.State = StateBehind
	default:
		r.State = StateReady
	}
	return r
}

func progressOf(p *jobs.Progress) *Progress {
	out := &Progress{Done: p.BytesDone, Total: p.BytesTotal, Rate: p.RateBytes}
	out.Percent = int(min(100, max(0, p.BytesDone*100/p.BytesTotal)))
	if p.RateBytes > 0 && p.BytesDone < p.BytesTotal {
		out.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / p.RateBytes * float64(time.Second))
	}
	return out
}

// Filter is what the chassis page shows, as its URL says: a state, a flag, and the table's order.
type Filter struct {
	State State  // "" for every state
	Flag  string // FlagStale, FlagDegraded or ""
	Sort  string // a column of sortColumns
	Desc  bool
}

// sortColumns are the table's sortable columns and how they compare.
var sortColumns = map[string]func(a, b Row) int{
	"id":       func(a, b Row) int { return strings.Compare(a.ID, b.ID) },
	"position": comparePosition,
	"state":    func(a, b Row) int { return cmp.Compare(stateIndex(a.State), stateIndex(b.State)) },
	"phase":    func(a, b Row) int { return strings.Compare(a.Phase, b.Phase) },
	"image":    func(a, b Row) int { return strings.Compare(a.Image, b.Image) },
	"group":    func(a, b Row) int { return strings.Compare(a.WorkerGroup, b.WorkerGroup) },
}

func comparePosition(a, b Row) int {
	return cmp.Or(strings.Compare(a.Chassis, b.Chassis), cmp.Compare(a.Slot, b.Slot), cmp.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
}

func stateIndex(s State) int { return slices.Index(States, s) }

// parseFilter reads a Filter from a query; what it does not know is a field error.
func parseFilter(q url.Values) (Filter, map[string]string) {
	f := Filter{State: State(q.Get("state")), Flag: q.Get("flag"), Sort: cmp.Or(q.Get("sort"), "position"), Desc: q.Get("dir") == "desc"}
	errs := map[string]string{}
	if f.State != "" && !slices.Contains(States, f.State) {
		errs["state"] = "no state " + string(f.State) + " (" + joinStates() + ")"
		f.State = ""
	}
	if f.Flag != "" && f.Flag != FlagStale && f.Flag != FlagDegraded {
		errs["flag"] = "no flag " + f.Flag + " (stale or degraded)"
		f.Flag = ""
	}
	if _, ok := sortColumns[f.Sort]; !ok {
		errs["sort"] = "no column " + f.Sort + " to sort by"
		f.Sort = "position"
	}
	if d := q.Get("dir"); d != "" && d != "asc" && d != "desc" {
		errs["dir"] = "the order is asc or desc, not " + d
	}
	return f, errs
}

func joinStates() string {
	var b []string
	for _, s := range States {
		b = append(b, string(s))
	}
	return strings.Join(b, ", ")
}

// Match reports whether r is in the set f selects.
func (f Filter) Match(r Row) bool {
	if f.State != "" && r.State != f.State {
		return false
	}
	switch f.Flag {
	case FlagStale:
		return r.Stale
	case FlagDegraded:
		return r.Degraded
	}
	return true
}

// Query is f as a URL query, with changes applied (key, value pairs; "" removes a key).
func (f Filter) Query(kv ...string) template.URL {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Flag != "" {
		q.Set("flag", f.Flag)
	}
	if f.Sort != "position" {
		q.Set("sort", f.Sort)
	}
	if f.Desc {
		q.Set("dir", "desc")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return "?"
	}
	return template.URL("?" + q.Encode())
}

// SortLink is the query that sorts by col: ascending, or the other way when it already sorts by col.
func (f Filter) SortLink(col string) template.URL {
	dir := ""
	if f.Sort == col && !f.Desc {
		dir = "desc"
	}
	if col == "position" && dir == "" {
		return f.Query("sort", "", "dir", "")
	}
	return f.Query("sort", col, "dir", dir)
}

// AriaSort is the aria-sort value of column col.
func (f Filter) AriaSort(col string) string {
	switch {
	case f.Sort != col:
		return "none"
	case f.Desc:
		return "descending"
	}
	return "ascending"
}

// sortRows orders rows as f says.
func sortRows(rows []Row, f Filter) {
	by := sortColumns[f.Sort]
	slices.SortStableFunc(rows, func(a, b Row) int {
		c := cmp.Or(by(a, b), comparePosition(a, b))
		if f.Desc {
			return -c
		}
		return c
	})
}

// Counts is how many machines are in each state, and carry each flag.
type Counts struct {
	All      int
	ByState  map[State]int
	Stale    int
	Degraded int
}

func countRows(rows []Row) Counts {
	c := Counts{All: len(rows), ByState: map[State]int{}}
	for _, r := range rows {
		c.ByState[r.State]++
		if r.Stale {
			c.Stale++
		}
		if r.Degraded {
			c.Degraded++
		}
	}
	return c
}

// Chassis is one chassis of the map: its bays in order, and the machines it has no bay for.
type Chassis struct {
	Name     string // "" for machines without a chassis
	Bays     []Bay
	Unplaced []Row
}

// Bay is a cartridge bay and the nodes of its cartridge (none: empty).
type Bay struct {
	N     int
	Nodes []Row
}

// Bays is how many cartridge bays a Moonshot 1500 chassis has; a chassis with a higher slot
// gets as many as its highest.
const Bays = 45

// layout places rows in their chassis, bays and nodes, chassis by name ("" last).
func layout(rows []Row) []Chassis {
	by := map[string]*Chassis{}
	var names []string
	for _, r := range rows {
		c := by[r.Chassis]
		if c == nil {
			c = &Chassis{Name: r.Chassis}
			by[r.Chassis] = c
			names = append(names, r.Chassis)
		}
		if r.Slot == 0 {
			c.Unplaced = append(c.Unplaced, r)
			continue
		}
		for len(c.Bays) < max(Bays, r.Slot) {
			c.Bays = append(c.Bays, Bay{N: len(c.Bays) + 1})
		}
		b := &c.Bays[r.Slot-1]
		b.Nodes = append(b.Nodes, r)
	}
	slices.SortFunc(names, func(a, b string) int {
		if (a == "") != (b == "") {
			return cmp.Compare(b, a) // "" last
		}
		return strings.Compare(a, b)
	})
	out := make([]Chassis, 0, len(names))
	for _, n := range names {
		c := by[n]
		for i := range c.Bays {
			slices.SortFunc(c.Bays[i].Nodes, func(a, b Row) int { return cmp.Compare(a.Node, b.Node) })
		}
		out = append(out, *c)
	}
	return out
}
