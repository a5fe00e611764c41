package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/jobs"
)

// Each action goes through internal/api's operation and redirects (303) to the page that shows
// its result; a bad value comes back on the page, beside its field, with nothing changed; an
// unknown machine or job is a 404 page.
func TestActions(t *testing.T) {
	w := newWorld(t, true)
	b := w.browser()
	b.signIn(opToken)
	type step struct {
		name     string
		path     string
		form     url.Values
		status   int
		location string
		want     []string // in the page answered (a refusal) or in the one redirected to
		jobs     int      // jobs submitted after the step
	}
	steps := []step{
		{"reimage without the confirmation", "/ui/machines/ms1-c1n2/reimage", url.Values{"image": {"debian@production"}, "confirm": {""}}, 400, "",
			[]string{`id="reimage-confirm-error"`, "Tick the box to confirm.", `aria-invalid="true"`}, 0},
		{"reimage with an image that does not exist", "/ui/machines/ms1-c1n2/reimage", url.Values{"image": {"debian@13"}}, 400, "",
			[]string{`id="reimage-image-error"`, `aria-describedby="reimage-image-error"`, "debian@13"}, 0},
		{"reimage with a malformed image", "/ui/machines/ms1-c1n2/reimage", url.Values{"image": {"debian@@"}}, 400, "", []string{`id="reimage-image-error"`}, 0},
		{"reimage of a machine without a BMC", "/ui/machines/loose/reimage", url.Values{"image": {"debian@production"}}, 409, "", []string{`id="reimage-error"`, "no BMC configured"}, 0},
		{"reimage of an unknown machine", "/ui/machines/nope/reimage", url.Values{"image": {"debian@production"}}, 404, "", []string{"There is no machine nope"}, 0},
		{"reimage", "/ui/machines/ms1-c1n2/reimage", url.Values{"image": {"debian@production"}}, 303, "/ui/machines/ms1-c1n2",
			[]string{"Reimage of ms1-c1n2 with debian@12.1 submitted: job job01."}, 1},
		{"reimage of a busy machine", "/ui/machines/ms1-c1n2/reimage", url.Values{"image": {"debian@12.2"}}, 409, "", []string{"the machine has an active job"}, 1},
		{"reboot", "/ui/machines/ms1-c1n3/reboot", nil, 303, "/ui/machines/ms1-c1n3", []string{"Reboot of ms1-c1n3 submitted: job job02."}, 2},
		{"power with a bad action", "/ui/machines/ms1-c1n1/power", url.Values{"action": {"explode"}}, 400, "", []string{`id="power-action-error"`}, 2},
		{"power", "/ui/machines/ms1-c1n1/power", url.Values{"action": {"off"}}, 303, "/ui/machines/ms1-c1n1", []string{"Power off of ms1-c1n1 done"}, 2},
		{"cancel", "/ui/jobs/job02/cancel", url.Values{"back": {"/ui/machines/ms1-c1n3"}}, 303, "/ui/machines/ms1-c1n3", []string{"Cancel of job job02 (reboot of ms1-c1n3) requested."}, 2},
		{"cancel, sent elsewhere", "/ui/jobs/job01/cancel", url.Values{"back": {"https://evil.example/"}}, 303, "/", nil, 2},
		{"cancel of a finished job", "/ui/jobs/job02/cancel", nil, 409, "", []string{`id="cancel-error"`, "has finished"}, 2},
		{"cancel of an unknown job", "/ui/jobs/job99/cancel", nil, 404, "", []string{"There is no job job99."}, 2},
		{"retry of a job that did not fail", "/ui/jobs/job02/retry", nil, 409, "", []string{"only a failed job is retried"}, 2},
		{"retry of an unknown job", "/ui/jobs/job99/retry", nil, 404, "", []string{"There is no job job99."}, 2},
	}
	run := func(steps []step) {
		for _, s := range steps {
			rec := b.act(s.path, s.form)
			if rec.Code != s.status || rec.Header().Get("Location") != s.location {
				t.Fatalf("%s: %d to %q, want %d to %q\n%s", s.name, rec.Code, rec.Header().Get("Location"), s.status, s.location, excerpt(rec.Body.String()))
			}
			if s.location != "" {
				rec = b.get(s.location)
			}
			checkPage(t, s.name, rec, rec.Code, s.want...)
			if n := w.jobs.count(); n != s.jobs {
				t.Fatalf("%s: %d jobs, want %d", s.name, n, s.jobs)
			}
		}
	}
	run(steps)
	if len(w.bmcs.calls) != 1 || w.bmcs.calls[0] != "ms1-c1n1 off" {
		t.Errorf("BMC calls %v", w.bmcs.calls)
	}
	ev, _ := w.inv.Events("ms1-c1n1", 0)
	if len(ev) == 0 || !strings.Contains(ev[len(ev)-1].Message, "power off (read back) by token ops") {
		t.Errorf("the power action is not on the timeline with the token's name: %+v", ev)
	}
	// A failed reimage is retried as asked: the same machine, image and probe.
	w.jobs.set("job01", func(j *jobs.Job) {
		j.State, j.Phase, j.Reason = jobs.StateFailed, jobs.PhaseWriting, "the agent went silent"
	})
	run([]step{
		{"retry", "/ui/jobs/job01/retry", nil, 303, "/ui/jobs/job03", []string{"Job job01 retried as job job03.", "token ops, retrying job job01"}, 3},
	})
	if j, _ := w.jobs.Get("job03"); j.Machine != "ms1-c1n2" || j.Kind != jobs.KindReimage || j.Image.Digest != w.d121 {
		t.Errorf("the retry: %+v", j)
	}
	// Images: promote, then roll back, with who did it in the channel's history.
	run([]step{
		{"promote to a bad channel name", "/ui/images/debian/promote", url.Values{"version": {"12.2"}, "channel": {"prod uction"}}, 400, "",
			[]string{`id="promote-channel-0-error"`, "not a channel name"}, 3},
		{"promote a version that does not exist", "/ui/images/debian/promote", url.Values{"version": {"13"}, "channel": {"production"}}, 400, "",
			[]string{`id="promote-version-0-error"`}, 3},
		{"promote", "/ui/images/debian/promote", url.Values{"version": {"12.2"}, "channel": {"production"}}, 303, "/ui/images",
			[]string{"debian@production now points at 12.2.", "promote from 12.1 to 12.2 by token ops", "debian@production → 12.2"}, 3},
		{"roll back", "/ui/images/debian@production/rollback", nil, 303, "/ui/images",
			[]string{"debian@production rolled back to 12.1.", "rollback from 12.2 to 12.1 by token ops"}, 3},
		{"roll back past the first version", "/ui/images/debian@production/rollback", nil, 409, "", []string{"no earlier version"}, 3},
	})
}

// The bulk reimage lists the machines the filter selects, with their count, before it acts;
// it then reimages exactly those, checks the image once before touching any, and says which
// machines it could not reimage.
func TestBulkReimage(t *testing.T) {
	w := newWorld(t, true)
	b := w.browser()
	b.signIn(opToken)
	// ms1-c1n3 is busy: the bulk reimage refuses it and goes on.
	if _, err := w.api.Reboot(t.Context(), opPrincipal, "ms1-c1n3", nil); err != nil {
		t.Fatal(err)
	}
	w.jobs.set("job01", func(j *jobs.Job) { j.State = jobs.StateRunning; j.Phase = jobs.PhaseRebooting })
	page := b.get("/ui/bulk?state=unassigned")
	checkPage(t, "the confirmation", page, http.StatusOK, `data-count="4"`, `<tr data-machine="lab-1">`, `<tr data-machine="loose">`,
		`name="machine" value="lab-1"`, `<tr data-machine="ms1-c2n1">`, `Reimage 4 machines`)
	if strings.Contains(page.Body.String(), `<tr data-machine="ms1-c1n1">`) {
		t.Errorf("the confirmation lists a machine the filter does not select")
	}
	ids := url.Values{"machine": {"ms1-c1n2", "ms1-c1n3", "ms1-c1n4", "loose"}, "state": {"behind"}}
	bad := url.Values{"image": {"debian@13"}}
	for k, v := range ids {
		bad[k] = v
	}
	rec := b.act("/ui/bulk", bad)
	checkPage(t, "a bulk reimage with a bad image", rec, http.StatusBadRequest, `id="bulk-image-error"`, `data-count="4"`)
	if w.jobs.count() != 1 {
		t.Fatalf("a bad image touched machines: %d jobs", w.jobs.count())
	}
	good := url.Values{"image": {"debian@12.2"}}
	for k, v := range ids {
		good[k] = v
	}
	rec = b.act("/ui/bulk", good)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/?state=behind" {
		t.Fatalf("bulk reimage: %d to %q\n%s", rec.Code, rec.Header().Get("Location"), excerpt(rec.Body.String()))
	}
	checkPage(t, "after the bulk reimage", b.get("/?state=behind"), http.StatusOK,
		"Reimage with debian@12.2 submitted for 2 of 4 machines. Refused: ms1-c1n3: jobs: machine ms1-c1n3: the machine has an active job", "loose: machine loose has no BMC")
	if w.jobs.count() != 3 {
		t.Errorf("%d jobs, want 3", w.jobs.count())
	}
	for _, id := range []string{"job02", "job03"} {
		if j, _ := w.jobs.Get(id); j.By != "token ops" || j.Image.Version != "12.2" {
			t.Errorf("%s: %+v", id, j)
		}
	}
	rec = b.act("/ui/bulk", url.Values{"image": {"debian@12.2"}})
	checkPage(t, "a bulk reimage of no machine", rec, http.StatusBadRequest, "No machine is selected")
}

// The plain listener's page links to the same page over HTTPS and changes nothing.
func TestPlainPage(t *testing.T) {
	u, _ := url.Parse("https://10.99.0.1:8443")
	h := PlainHandler(u)
	rec := httptestDo(h, "GET", "/ui/machines/ms1-c1n1?x=1")
	checkPage(t, "GET", rec, http.StatusOK, `href="https://10.99.0.1:8443/ui/machines/ms1-c1n1?x=1"`, "fingerprint")
	if rec := httptestDo(h, "POST", "/ui/login"); rec.Code != http.StatusForbidden {
		t.Errorf("POST: %d", rec.Code)
	}
}
