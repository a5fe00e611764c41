package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/jobs"
)

// Live updates. A page with live parts opens one event stream (StreamPath?view=…), which sends:
//
//  1. at once, on every connect and reconnect, the page's live parts whole (a snapshot), so that
//     a page whose connection dropped is never left showing what was;
//  2. then, as machines change, their fragments (a chassis node and table row, a machine's
//     summary and timeline, a job), rendered once for every page that shows them;
//  3. a heartbeat every HeartbeatInterval, by which the page knows that it is live.
//
// Every message is an SSE event named "update" whose data is HTML elements that replace the
// elements of the same id (htmx's out-of-band swap). The hub learns of changes from the
// inventory's events (job phases, boots, assignments, BMC health: each sent within minGap) and
// by reading the running jobs' progress every Coalesce: a machine's progress goes out at most
// once per Coalesce, the latest kept, so that a chassis of 180 writing nodes costs a browser 180
// small updates a second, not a flood. A browser that does not take its updates in time is cut
// off (it reconnects, and gets a snapshot).

// HeartbeatInterval is how often a stream sends a heartbeat.
const HeartbeatInterval = 15 * time.Second

const (
	minGap      = 250 * time.Millisecond // the least time between two updates of one machine
	clientQueue = 64                     // messages a stream may fall behind before it is cut off
	sweepEvery  = 30                     // polls between two refreshes of every machine
)

// liveView is what one stream shows.
type liveView struct {
	kind    string // chassis, machine, jobs, job
	id      string // the machine's or the job's id
	machine string // a job's machine
	filter  Filter // the chassis page's
}

// client is one open stream.
type client struct {
	view liveView
	out  chan []byte
	gone chan struct{} // closed when the hub cut the stream off
}

// hub renders the fragments of changed machines and sends them to the streams that show them.
type hub struct {
	s        *Server
	interval time.Duration

	mu      sync.Mutex
	clients map[*client]struct{}
	due     map[string]time.Time // machine → when its pending update goes out
	last    map[string]time.Time // machine → when its last update went out
	seen    map[string]string    // machine → the running job's state, phase and progress last read
	sent    map[string]string    // machine → its chassis fragments as last sent
	polls   int
	wake    chan struct{}
}

func newHub(s *Server, interval time.Duration) *hub {
	return &hub{s: s, interval: interval, clients: map[*client]struct{}{}, due: map[string]time.Time{},
		last: map[string]time.Time{}, seen: map[string]string{}, sent: map[string]string{}, wake: make(chan struct{}, 1)}
}

func (h *hub) join(v liveView) *client {
	c := &client{view: v, out: make(chan []byte, clientQueue), gone: make(chan struct{})}
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

// mark makes machine's update due: at once after an event (unless one went out within minGap),
// after Coalesce since the last one for progress.
func (h *hub) mark(machine string, urgent bool, now time.Time) {
	gap := h.interval
	if urgent {
		gap = minGap
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	at := now
	if l, ok := h.last[machine]; ok && l.Add(gap).After(at) {
		at = l.Add(gap)
	}
	if d, ok := h.due[machine]; !ok || at.Before(d) {
		h.due[machine] = at
	}
}

// next is when the earliest pending update goes out (zero: none is pending).
func (h *hub) next() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var t time.Time
	for _, d := range h.due {
		if t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return t
}

func (h *hub) run(ctx context.Context) {
	events, cancel := h.s.d.Inventory.Subscribe()
	defer cancel()
	poll := time.NewTicker(h.interval)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		var fire <-chan time.Time
		if n := h.next(); !n.IsZero() {
			timer.Reset(time.Until(n))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case e := <-events:
			h.mark(e.Machine, true, time.Now())
		case <-poll.C:
			h.poll(time.Now())
		case <-fire:
			h.flush(time.Now())
		}
	}
}

// watching reports whether any stream is open.
func (h *hub) watching() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients) > 0
}

// poll reads the running jobs: a change of state or phase is due at once, one of progress after
// Coalesce. Every sweepEvery polls, every machine is looked at again (what changed without an
// event, such as a queued job's ETA). Nothing is read while no stream is open.
func (h *hub) poll(now time.Time) {
	if !h.watching() || h.s.d.Jobs == nil {
		return
	}
	h.polls++
	if h.polls%sweepEvery == 0 {
		for _, m := range h.s.d.Inventory.Machines() {
			h.mark(m.ID, false, now)
		}
	}
	for _, j := range h.s.d.Jobs.List(jobs.Filter{Active: true}) {
		state := string(j.State) + " " + string(j.Phase)
		mark := state
		if j.Progress != nil {
			mark += fmt.Sprintf(" %d %d", j.Progress.BytesDone, j.Progress.BytesTotal)
		}
		h.mu.Lock()
		old, ok := h.seen[j.Machine]
		h.seen[j.Machine] = mark
		h.mu.Unlock()
		switch {
		case !ok || !strings.HasPrefix(old+" ", state+" "):
			h.mark(j.Machine, true, now)
		case old != mark:
			h.mark(j.Machine, false, now)
		}
	}
}

// flush sends the updates that are due.
func (h *hub) flush(now time.Time) {
	h.mu.Lock()
	var due []string
	for m, at := range h.due {
		if !at.After(now) {
			due = append(due, m)
			delete(h.due, m)
			h.last[m] = now
		}
	}
	kinds := map[string]bool{}
	machinesShown, jobsShown := map[string]bool{}, map[string]bool{}
	for c := range h.clients {
		kinds[c.view.kind] = true
		switch c.view.kind {
		case "machine":
			machinesShown[c.view.id] = true
		case "job":
			jobsShown[c.view.id] = true
		}
	}
	h.mu.Unlock()
	if len(due) == 0 || len(kinds) == 0 {
		return
	}
	isDue := map[string]bool{}
	for _, m := range due {
		isDue[m] = true
	}
	msgs := map[string][]byte{} // "kind id" → the message
	if kinds["chassis"] {
		if b := h.chassisUpdate(isDue); b != nil {
			msgs["chassis"] = b
		}
	}
	if kinds["jobs"] {
		msgs["jobs"] = h.s.liveMessage(liveView{kind: "jobs"})
	}
	for id := range machinesShown {
		if isDue[id] {
			msgs["machine "+id] = h.s.liveMessage(liveView{kind: "machine", id: id})
		}
	}
	h.mu.Lock()
	var jobViews []liveView
	for c := range h.clients {
		if c.view.kind == "job" && isDue[c.view.machine] && jobsShown[c.view.id] {
			jobViews = append(jobViews, c.view)
			delete(jobsShown, c.view.id)
		}
	}
	h.mu.Unlock()
	for _, v := range jobViews {
		msgs["job "+v.id] = h.s.liveMessage(v)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		key := c.view.kind
		if key == "machine" || key == "job" {
			key += " " + c.view.id
		}
		b := msgs[key]
		if b == nil {
			continue
		}
		select {
		case c.out <- b:
			h.s.met.updates.Inc()
		default:
			// Too slow: cut it off; it reconnects and starts again from a snapshot.
			delete(h.clients, c)
			close(c.gone)
			h.s.met.dropped.Inc()
		}
	}
}

// chassisUpdate is the chassis page's message for the due machines: each one's node and table
// row, when they changed since last sent, and the counts.
func (h *hub) chassisUpdate(due map[string]bool) []byte {
	s := h.s
	rows := s.rows(s.d.API.Views())
	var b bytes.Buffer
	changed := false
	for _, r := range rows {
		if !due[r.ID] {
			continue
		}
		var node, row bytes.Buffer
		if err := errors.Join(s.fragment(&node, "node", r), s.fragment(&row, "row", r)); err != nil {
			s.log.Error("web: render a machine", "machine", r.ID, "err", err)
			continue
		}
		html := oob(node.String()) + "\n" + oob(row.String()) + "\n"
		h.mu.Lock()
		same := h.sent[r.ID] == html
		h.sent[r.ID] = html
		h.mu.Unlock()
		if same {
			continue
		}
		changed = true
		b.WriteString(html)
	}
	if !changed {
		return nil
	}
	if err := s.fragment(&b, "counts-oob", countRows(rows)); err != nil {
		s.log.Error("web: render the counts", "err", err)
	}
	return sseEvent("update", b.Bytes())
}

// oob marks the element html starts with to be swapped out of band: in place of the element of
// the same id (htmx's hx-swap-oob).
func oob(html string) string {
	html = strings.TrimLeft(html, " \n")
	if j := strings.IndexAny(html, " >"); strings.HasPrefix(html, "<") && j > 0 {
		return html[:j] + ` hx-swap-oob="true"` + html[j:]
	}
	return html
}

// sseEvent is one Server-Sent Event named name with data, one "data:" line per line.
func sseEvent(name string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: " + name + "\n")
	for _, l := range bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n")) {
		b.WriteString("data: ")
		b.Write(bytes.TrimRight(l, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// liveMessage renders v's live part whole (a snapshot, or a page's update), as one event; nil
// when it cannot be rendered.
func (s *Server) liveMessage(v liveView) []byte {
	var b bytes.Buffer
	var err error
	switch v.kind {
	case "chassis":
		err = s.fragment(&b, "fleet", s.fleet(v.filter))
	case "machine":
		l, ok := s.machineLiveOf(v.id)
		if !ok {
			return nil
		}
		err = s.fragment(&b, "machine-live", l)
	case "jobs":
		err = s.fragment(&b, "jobs-live", s.jobsOverview())
	case "job":
		d, ok := s.jobOf(v.id)
		if !ok {
			return nil
		}
		err = s.fragment(&b, "job-live", d)
	}
	if err != nil {
		s.log.Error("web: render a live part", "view", v.kind, "err", err)
		return nil
	}
	return sseEvent("update", []byte(oob(b.String())))
}

// events is GET StreamPath?view=chassis|machine|jobs|job[&id=…]: the stream of one page.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ viewer) {
	q := r.URL.Query()
	v := liveView{kind: q.Get("view"), id: q.Get("id")}
	switch v.kind {
	case "chassis":
		v.filter, _ = parseFilter(q)
	case "jobs":
	case "machine":
		if _, ok := s.d.Inventory.Machine(v.id); !ok {
			http.Error(w, "no machine "+v.id, http.StatusNotFound)
			return
		}
	case "job":
		d, ok := s.jobOf(v.id)
		if !ok {
			http.Error(w, "no job "+v.id, http.StatusNotFound)
			return
		}
		v.machine = d.Job.Machine
	default:
		http.Error(w, "view must be chassis, machine, jobs or job", http.StatusBadRequest)
		return
	}
	// Join before the snapshot is rendered: a change made meanwhile is sent after it (again,
	// harmlessly), never lost between the two.
	c := s.hub.join(v)
	defer s.hub.leave(c)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	snap := s.liveMessage(v)
	if snap == nil {
		return
	}
	// retry: how long the browser waits before it reconnects (the SSE default is 3 s).
	fmt.Fprint(w, "retry: 2000\n\n")
	w.Write(snap)
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-c.gone:
			return
		case <-tick.C:
			fmt.Fprintf(w, "event: heartbeat\ndata: %d\n\n", time.Now().Unix())
		case b := <-c.out:
			w.Write(b)
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
