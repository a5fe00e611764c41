package web

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/jobs"
)

// Every page renders for a reader, with what it must show; unknown machines and jobs are 404
// pages; a filter the page does not have is a 400 that still shows the chassis.
func TestPages(t *testing.T) {
	w := newWorld(t, true)
	now := time.Now().UTC()
	// ms1-c1n3 writes, ms1-c1n4's newest job failed, ms1-c2n1 waits in the queue.
	for _, id := range []string{"ms1-c1n3", "ms1-c1n4", "ms1-c2n1"} {
		if _, err := w.api.Reimage(t.Context(), opPrincipal, id, "debian@production", nil); err != nil {
			t.Fatal(err)
		}
	}
	w.jobs.set("job01", func(j *jobs.Job) {
		j.State, j.Phase = jobs.StateRunning, jobs.PhaseWriting
		j.Phases = append(j.Phases, jobs.PhaseTime{Phase: jobs.PhaseFencing, Start: now.Add(-time.Minute)}, jobs.PhaseTime{Phase: jobs.PhaseWriting, Start: now.Add(-20 * time.Second)})
		j.Progress = &jobs.Progress{BytesDone: 150 << 20, BytesTotal: 300 << 20, RateBytes: 10 << 20, Time: now}
	})
	w.jobs.set("job02", func(j *jobs.Job) {
		j.State, j.Phase, j.Reason = jobs.StateFailed, jobs.PhaseNetbooting, "no DHCP request from the machine in 10m0s"
	})
	w.jobs.set("job03", func(j *jobs.Job) {
		j.Queue = &jobs.Queue{Position: 1, Start: now.Add(time.Minute), Done: now.Add(5 * time.Minute)}
	})
	w.bmcs.degraded = true
	b := w.browser()
	for _, c := range []struct {
		path   string
		status int
		want   []string
	}{
		{"/", 200, []string{`data-machine="ms1-c1n1" data-state="ready"`, `data-machine="ms1-c1n2" data-state="behind"`,
			`data-machine="ms1-c1n3" data-state="running" data-phase="writing"`, `data-machine="ms1-c1n4" data-state="failed"`,
			`data-machine="ms1-c2n1" data-state="queued"`, `data-machine="lab-1" data-state="unassigned"`,
			`data-bay="45"`, `<h3 id="chassis-h-0">Chassis lab</h3>`, `Chassis ms1`, `Without a chassis`,
			`aria-label="Written: 50%"`, `50%`, `BMC degraded`, `id="count-running">1<`, `id="count-all">7<`,
			`<span class="glyph" aria-hidden="true">▶</span> running`, `data-stream="/ui/events?view=chassis"`, `Unknown clients`}},
		{"/?state=failed&sort=state&dir=desc", 200, []string{`data-filter-state="failed"`, `aria-sort="descending"`, `Showing the 1 machines in state failed of 7`}},
		{"/?flag=degraded", 200, []string{`data-filter-flag="degraded"`}},
		{"/?state=bogus", 400, []string{`no state bogus`, `data-machine="ms1-c1n1"`}},
		{"/ui/machines/ms1-c1n3", 200, []string{`id="machine-live"`, `data-phase="writing" data-status="current" aria-current="step"`,
			`data-phase="fencing" data-status="done"`, `data-phase="verifying" data-status="pending"`, `150.0 MiB of 300.0 MiB`,
			`system <code>C1N3</code>`, `data-power="On"`, `Job history`, `bay 1, node 3`}},
		{"/ui/machines/ms1-c1n4", 200, []string{`data-phase="netbooting" data-status="failed"`, `no DHCP request from the machine`}},
		{"/ui/machines/ms1-c1n1", 200, []string{`up to date with debian@production`, `debian@12.1`}},
		{"/ui/machines/loose", 200, []string{`No BMC is configured`, `No job has run on this machine.`}},
		{"/ui/machines/nope", 404, []string{`There is no machine nope in the inventory.`}},
		{"/ui/jobs", 200, []string{`id="jobs-live"`, `data-job="job02" data-state="failed"`, `no DHCP request`, `data-job="job01" data-state="running"`, `number 1`}},
		{"/ui/jobs/job01", 200, []string{`id="job-live"`, `data-job="job01" data-state="running" data-phase="writing"`, `requested by token ops`}},
		{"/ui/jobs/job99", 404, []string{`There is no job job99.`}},
		{"/ui/images", 200, []string{`debian@production → 12.1`, `promote to 12.1 by token admin`, `data-version="12.2"`, `data-running="1"`}},
		{"/ui/status", 200, []string{`href="/metrics"`, `href="/api/v1/openapi.json"`, `data-bmc="ms1" data-degraded="true"`, `connection refused`, `data-job="job03"`, `imaged_web_refused_total`}},
		{"/ui/login", 200, []string{`<input id="token" name="token" type="password"`}},
		{"/ui/bulk?state=failed", 200, []string{`data-count="1"`, `<tr data-machine="ms1-c1n4">`}},
		{"/ui/nothing", 404, []string{`There is no page at /ui/nothing.`}},
	} {
		rec := b.get(c.path)
		checkPage(t, "GET "+c.path, rec, c.status, c.want...)
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", c.path, ct)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", c.path, csp)
		}
	}
	// A reader sees no action form.
	if body := b.get("/ui/machines/ms1-c1n1").Body.String(); strings.Contains(body, `id="form-reimage"`) || strings.Contains(body, `id="bulk-link"`) {
		t.Errorf("an anonymous reader is offered actions")
	}
}

// The embedded assets are served, and the vendored ones are the files VERSIONS names.
func TestStatic(t *testing.T) {
	w := newWorld(t, true)
	b := w.browser()
	for path, want := range map[string]string{
		"/ui/static/htmx.min.js": "htmx", "/ui/static/sse.js": "defineExtension('sse'", "/ui/static/style.css": "prefers-color-scheme: dark",
		"/ui/static/live.js": "htmx:sseOpen",
	} {
		checkPage(t, path, b.get(path), http.StatusOK, want)
	}
	checkPage(t, "a directory", b.get("/ui/static/"), http.StatusNotFound)
}
