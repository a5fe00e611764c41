package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// streamRecorder is a ResponseWriter that an event stream writes to while the test reads it.
type streamRecorder struct {
	mu     sync.Mutex
	header http.Header
	code   int
	body   strings.Builder
	read   int
}

func (s *streamRecorder) Header() http.Header { return s.header }
func (s *streamRecorder) WriteHeader(c int)   { s.mu.Lock(); s.code = c; s.mu.Unlock() }
func (s *streamRecorder) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code = 200
	}
	return s.body.Write(b)
}
func (s *streamRecorder) Flush() {}

// events returns the events written since the last call: name and data (the data lines joined).
func (s *streamRecorder) events() []sseMessage {
	s.mu.Lock()
	all := s.body.String()
	s.mu.Unlock()
	fresh := all[s.read:]
	end := strings.LastIndex(fresh, "\n\n")
	if end < 0 {
		return nil
	}
	s.read += end + 2
	var out []sseMessage
	for _, block := range strings.Split(fresh[:end], "\n\n") {
		var m sseMessage
		var data []string
		for _, l := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(l, "event: "):
				m.name = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				data = append(data, strings.TrimPrefix(l, "data: "))
			case strings.HasPrefix(l, "retry: "), strings.HasPrefix(l, ":"), l == "":
			default:
				panic(fmt.Sprintf("a line of the stream is not SSE: %q", l))
			}
		}
		if m.name == "" && data == nil {
			continue
		}
		m.data = strings.Join(data, "\n")
		out = append(out, m)
	}
	return out
}

type sseMessage struct{ name, data string }

// openStream starts the stream of view for a reader; stop ends it as a browser closing the page.
func openStream(w *world, query string) (rec *streamRecorder, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("GET", StreamPath+"?"+query, nil).WithContext(ctx)
	rec = &streamRecorder{header: http.Header{}}
	done := make(chan struct{})
	go func() {
		w.h.ServeHTTP(rec, r)
		close(done)
	}()
	return rec, func() { cancel(); <-done }
}

// A stream sends the page's live part whole first, then the fragments of what changes, and a
// heartbeat; a reconnect starts again from a snapshot of the truth, whatever it missed.
func TestStreamSnapshotThenUpdates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, true)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.web.Run(ctx)
		rec, stop := openStream(w, "view=chassis&state=queued")
		synctest.Wait()
		ev := rec.events()
		if rec.code != 200 || rec.header.Get("Content-Type") != "text/event-stream" || len(ev) != 1 || ev[0].name != "update" {
			t.Fatalf("the stream's start: %d %q %+v", rec.code, rec.header.Get("Content-Type"), ev)
		}
		snap := ev[0].data
		for _, want := range []string{`<div hx-swap-oob="true" id="fleet"`, `data-filter-state="queued"`, `id="node-ms1-c1n2"`, `data-machine="ms1-c1n2" data-state="behind"`, `id="row-lab-1"`} {
			if !strings.Contains(snap, want) {
				t.Errorf("the snapshot lacks %q", want)
			}
		}
		// A job is submitted for ms1-c1n2 (its timeline says so): its node and row, and the
		// counts, follow at once.
		if _, err := w.api.Reimage(t.Context(), opPrincipal, "ms1-c1n2", "debian@production", nil); err != nil {
			t.Fatal(err)
		}
		w.inv.Event(machines.Event{Machine: "ms1-c1n2", Kind: "job", Message: "reimage requested"})
		synctest.Wait()
		ev = rec.events()
		if len(ev) != 1 || !strings.Contains(ev[0].data, `<a hx-swap-oob="true" class="node" id="node-ms1-c1n2"`) ||
			!strings.Contains(ev[0].data, `<tr hx-swap-oob="true" id="row-ms1-c1n2" data-machine="ms1-c1n2" data-state="queued"`) ||
			!strings.Contains(ev[0].data, `<span class="n" id="count-queued" hx-swap-oob="true">1</span>`) ||
			strings.Contains(ev[0].data, `id="node-ms1-c1n1"`) {
			t.Fatalf("the update: %+v", ev)
		}
		// The heartbeat.
		time.Sleep(HeartbeatInterval)
		synctest.Wait()
		if ev = rec.events(); len(ev) != 1 || ev[0].name != "heartbeat" {
			t.Errorf("after %s: %+v", HeartbeatInterval, ev)
		}
		// The connection drops; meanwhile the job starts writing. The next connection's first
		// message is the truth.
		stop()
		w.jobs.set("job01", func(j *jobs.Job) {
			j.State, j.Phase = jobs.StateRunning, jobs.PhaseWriting
			j.Progress = &jobs.Progress{BytesDone: 1 << 20, BytesTotal: 4 << 20, RateBytes: 1 << 20}
		})
		w.inv.Event(machines.Event{Machine: "ms1-c1n2", Kind: "job", Message: "writing"})
		synctest.Wait()
		rec2, stop2 := openStream(w, "view=chassis")
		defer stop2()
		synctest.Wait()
		ev = rec2.events()
		if len(ev) != 1 || !strings.Contains(ev[0].data, `data-machine="ms1-c1n2" data-state="running" data-phase="writing"`) || !strings.Contains(ev[0].data, `value="25"`) {
			t.Fatalf("the snapshot after the reconnect: %+v", ev)
		}
		// The other pages' streams: a machine's, a job's, the jobs'; unknown ones are 404.
		for _, c := range []struct{ query, want string }{
			{"view=machine&id=ms1-c1n2", `<section hx-swap-oob="true" id="machine-live"`},
			{"view=job&id=job01", `<section hx-swap-oob="true" id="job-live"`},
			{"view=jobs", `<div hx-swap-oob="true" id="jobs-live"`},
		} {
			r, stop := openStream(w, c.query)
			synctest.Wait()
			if ev := r.events(); len(ev) != 1 || !strings.Contains(ev[0].data, c.want) {
				t.Errorf("%s: %+v", c.query, ev)
			}
			stop()
		}
		for _, q := range []string{"view=machine&id=nope", "view=job&id=nope", "view=other"} {
			r, stop := openStream(w, q)
			synctest.Wait()
			stop()
			if r.code != 404 && r.code != 400 {
				t.Errorf("%s: %d", q, r.code)
			}
		}
	})
}

var nodeProgress = regexp.MustCompile(`id="node-(m\d+)"[^>]*>[^<]*<span class="node-id">[^<]*</span>(?s:.*?)value="(\d+)"`)

// 180 machines write at once and report progress ten times a second: a dashboard gets at most
// one update of each machine's progress a second, and the latest one.
func TestProgressCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, true)
		var ms []machines.Machine
		for i := range 180 {
			ms = append(ms, machines.Machine{ID: fmt.Sprintf("m%d", i), MACs: []machines.MAC{machines.MustParseMAC(fmt.Sprintf("52:54:00:98:%02x:%02x", i/256, i%256))},
				Chassis: "big", Slot: 1 + i/4, Node: 1 + i%4, Boot: "agent"})
		}
		if err := w.st.SyncMachines(ms); err != nil {
			t.Fatal(err)
		}
		w.inv.Reload()
		for _, m := range ms {
			w.jobs.jobs = append(w.jobs.jobs, jobs.Job{ID: "j-" + m.ID, Kind: jobs.KindReimage, Machine: m.ID, State: jobs.StateRunning, Phase: jobs.PhaseWriting,
				Progress: &jobs.Progress{BytesTotal: 1000}})
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.web.Run(ctx)
		c := w.web.hub.join(liveView{kind: "chassis"})
		updates := map[string]int{}
		latest := map[string]string{}
		var mu sync.Mutex
		go func() {
			for {
				select {
				case b := <-c.out:
					mu.Lock()
					for _, m := range nodeProgress.FindAllStringSubmatch(string(b), -1) {
						updates[m[1]]++
						latest[m[1]] = m[2]
					}
					mu.Unlock()
				case <-ctx.Done():
					return
				}
			}
		}()
		const seconds = 10
		for tick := 1; tick <= seconds*10; tick++ {
			time.Sleep(100 * time.Millisecond)
			w.jobs.mu.Lock()
			for i := range w.jobs.jobs {
				w.jobs.jobs[i].Progress = &jobs.Progress{BytesDone: int64(tick * 9), BytesTotal: 1000, RateBytes: 90}
			}
			w.jobs.mu.Unlock()
		}
		time.Sleep(3 * time.Second) // the last progress goes out
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(updates) != 180 {
			t.Fatalf("%d machines updated, want 180", len(updates))
		}
		for id, n := range updates {
			if n > seconds+3 || n < seconds-2 {
				t.Errorf("%s: %d updates in %d s of progress ten times a second", id, n, seconds)
			}
			if latest[id] != "90" {
				t.Errorf("%s: the last update shows %s%%, want 90%%", id, latest[id])
			}
		}
		t.Logf("updates of m0: %d; messages coalesce every machine's progress of a second", updates["m0"])
	})
}
