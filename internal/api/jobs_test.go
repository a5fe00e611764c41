package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

// fakeJobs records submissions; a machine with a job is busy.
type fakeJobs struct {
	jobs     []jobs.Job
	signals  []string
	checkIns []string
}

func (f *fakeJobs) Submit(ctx context.Context, req jobs.Request) (jobs.Job, error) {
	for _, j := range f.jobs {
		if j.Machine == req.Machine && !j.State.Done() {
			return j, fmt.Errorf("jobs: %s: %w", req.Machine, jobs.ErrBusy)
		}
	}
	j := jobs.Job{ID: fmt.Sprintf("job%d", len(f.jobs)+1), Kind: req.Kind, Machine: req.Machine, By: req.By, State: jobs.StateQueued, Phase: jobs.PhaseQueued}
	if req.Kind == jobs.KindReimage {
		img := req.Image
		j.Image = &img
	}
	f.jobs = append(f.jobs, j)
	return j, nil
}
func (f *fakeJobs) Cancel(id, by string) (jobs.Job, error) {
	for i, j := range f.jobs {
		if j.ID == id {
			if j.State.Done() {
				return j, jobs.ErrFinished
			}
			f.jobs[i].State = jobs.StateCancelled
			return f.jobs[i], nil
		}
	}
	return jobs.Job{}, jobs.ErrNotFound
}
func (f *fakeJobs) Get(id string) (jobs.Job, bool) {
	for _, j := range f.jobs {
		if j.ID == id {
			return j, true
		}
	}
	return jobs.Job{}, false
}
func (f *fakeJobs) List(fl jobs.Filter) []jobs.Job {
	var out []jobs.Job
	for i := len(f.jobs) - 1; i >= 0; i-- {
		if fl.Machine == "" || f.jobs[i].Machine == fl.Machine {
			out = append(out, f.jobs[i])
		}
	}
	if fl.Limit > 0 && len(out) > fl.Limit {
		out = out[:fl.Limit]
	}
	return out
}
func (f *fakeJobs) Observe(machine string, s jobs.Signal) {
	f.signals = append(f.signals, machine+":"+string(s.Kind))
}
func (f *fakeJobs) CheckIn(machine string, digest images.Digest) (machines.CheckIn, error) {
	f.checkIns = append(f.checkIns, machine+" "+digest.String())
	return machines.CheckIn{Machine: machine, Digest: digest, Stale: digest.Hex() != strings.Repeat("ab", 32)}, nil
}
func (f *fakeJobs) LastCheckIn(machine string) (machines.CheckIn, bool) {
	return machines.CheckIn{}, false
}
func (f *fakeJobs) Latest(machine string) (jobs.Job, bool) {
	if l := f.List(jobs.Filter{Machine: machine, Limit: 1}); len(l) > 0 {
		return l[0], true
	}
	return jobs.Job{}, false
}

func TestJobsAPI(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SyncMachines([]machines.Machine{
		{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}, IP: netip.MustParseAddr("192.0.2.1"), WorkerGroup: "linux-build", WorkerType: "b-linux-large"},
		{ID: "ms1-c1n2", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:12")}},
	})
	digest, _ := images.ParseDigest(strings.Repeat("ab", 32))
	st.PutImage(images.Image{Name: "debian", Version: "12.1", Digest: digest})
	st.Promote("debian", "12.1", "production", "test")
	inv, _ := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	fj := &fakeJobs{}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), BMCs: &fakeBMCs{}, Jobs: fj, ReimageStale: true, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	h := Authenticate(AuthConfig{AnonymousRead: true}, mux)
	op := &Principal{Name: "roller", Scope: ScopeOperate}
	steps := []struct {
		name   string
		call   call
		status int
		field  string
		want   string
	}{
		{"reimage without a scope", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{"image":"debian@production"}`, nil}, 401, "", ""},
		{"reimage a missing image", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{"image":"debian@13"}`, op}, 404, "image", ""},
		{"reimage without an image", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{}`, op}, 400, "image", "required"},
		{"reimage an unknown machine", call{"POST", "/api/v1/machines/nope/reimage", `{"image":"debian@production"}`, op}, 404, "id", ""},
		{"reimage a machine without a BMC", call{"POST", "/api/v1/machines/ms1-c1n2/reimage", `{"image":"debian@production"}`, op}, 409, "id", "no BMC"},
		{"reimage with a bad probe field", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{"image":"debian@production","probe":{"port":"x"}}`, op}, 400, "probe.port", ""},
		{"reimage", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{"image":"debian@production"}`, op}, 202, "", `"id": "job1"`},
		{"the job's image names its channel", call{"GET", "/api/v1/jobs/job1", "", nil}, 200, "", `"channel": "debian@production"`},
		{"a second reimage of a busy machine", call{"POST", "/api/v1/machines/ms1-c1n1/reimage", `{"image":"debian@12.1"}`, op}, 409, "id", "active job"},
		{"the job", call{"GET", "/api/v1/jobs/job1", "", nil}, 200, "", `"by": "roller"`},
		{"a missing job", call{"GET", "/api/v1/jobs/job9", "", nil}, 404, "id", ""},
		{"jobs of a machine", call{"GET", "/api/v1/jobs?machine=ms1-c1n1&limit=5", "", nil}, 200, "", `"machine": "ms1-c1n1"`},
		{"jobs with a bad filter", call{"GET", "/api/v1/jobs?active=maybe", "", nil}, 400, "active", ""},
		{"the machine shows its last job", call{"GET", "/api/v1/machines", "", nil}, 200, "", `"last_job": {
      "id": "job1"`},
		{"cancel", call{"POST", "/api/v1/jobs/job1/cancel", "", op}, 200, "", `"state": "cancelled"`},
		{"cancel again", call{"POST", "/api/v1/jobs/job1/cancel", "", op}, 409, "id", ""},
		{"register without a blob store", call{"POST", "/api/v1/images", `{"name":"a","version":"1","digest":"` + digest.String() + `"}`, &Principal{Name: "root", Scope: ScopeAdmin}}, 503, "", "no blob store"},
		{"Roller: wrong group", call{"POST", "/api/v1/workers/ms1-c1n1/group/windows/jobs?task_name=reimage", "", op}, 409, "worker_group", "linux-build"},
		{"Roller: unknown task", call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=format", "", op}, 400, "task_name", ""},
		{"Roller: ping", call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=ping", "", op}, 200, "", `"task_id": "ping-ms1-c1n1"`},
		{"Roller: reimage with no assigned image", call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=reimage", "", op}, 409, "image", ""},
		{"Roller: reimage", call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=reimage&image=debian@production", "", op}, 200, "", `"task_id": "job2"`},
		{"Roller: reboot of a busy machine", call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=reboot", "", op}, 409, "id", ""},
	}
	for _, s := range steps {
		status, e, body := s.call.do(h)
		if status != s.status || e.Field != s.field || !strings.Contains(body, s.want) {
			t.Errorf("%s: %d field %q, want %d field %q containing %q:\n%s", s.name, status, e.Field, s.status, s.field, s.want, body)
		}
	}

	// The booted OS: known by its address (httptest's client is 192.0.2.1).
	req := func(method, path, body, remote string) (int, string) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	if code, body := req("GET", "/api/v1/metadata", "", "192.0.2.1:4000"); code != 200 || !strings.Contains(body, `"worker_type": "b-linux-large"`) || !strings.Contains(body, `"machine_id": "ms1-c1n1"`) {
		t.Errorf("metadata: %d %s", code, body)
	}
	if code, _ := req("GET", "/api/v1/metadata", "", "192.0.2.99:4000"); code != 404 {
		t.Errorf("metadata for an unknown address: %d", code)
	}
	if code, body := req("POST", "/api/v1/check-in", `{"digest":"sha256:`+strings.Repeat("cd", 32)+`"}`, "192.0.2.1:4000"); code != 200 || !strings.Contains(body, `"stale": true`) {
		t.Errorf("check-in: %d %s", code, body)
	}
	if len(fj.checkIns) != 1 || !strings.HasPrefix(fj.checkIns[0], "ms1-c1n1 sha256:cdcd") {
		t.Errorf("check-ins: %v", fj.checkIns)
	}
	// The digest is read here, at the edge: what is not one is refused naming the field, and
	// never reaches the jobs.
	for _, bad := range []string{"", "md5:x", "sha256:", "sha256:" + strings.Repeat("z", 64), "sha256:" + strings.Repeat("a", 63),
		"sha256:" + strings.Repeat("a", 64) + "; rm -rf /", "sha256:" + strings.Repeat("0", 64)} {
		b, _ := json.Marshal(CheckInRequest{Digest: bad})
		if code, body := req("POST", "/api/v1/check-in", string(b), "192.0.2.1:4000"); code != 400 || !strings.Contains(body, `"field": "digest"`) {
			t.Errorf("check-in with %q: %d %s", bad, code, body)
		}
	}
	if len(fj.checkIns) != 1 {
		t.Errorf("check-ins that are not digests reached the jobs: %v", fj.checkIns)
	}
	// jobs.reimage_stale: a stale check-in of a machine with an assigned image and no job
	// submits a reimage with the assigned image.
	for i := range fj.jobs {
		fj.jobs[i].State = jobs.StateSucceeded
	}
	// The machine follows debian@production; the reimage keeps it following (the job's
	// assignment must not pin it to the version).
	st.AssignImage("ms1-c1n1", digest, "debian@production")
	inv.Reload()
	before := len(fj.jobs)
	req("POST", "/api/v1/check-in", `{"digest":"sha256:`+strings.Repeat("cd", 32)+`"}`, "192.0.2.1:4000")
	if len(fj.jobs) != before+1 || fj.jobs[before].By != "policy jobs.reimage_stale" || fj.jobs[before].Image.Digest != digest ||
		fj.jobs[before].Image.Channel != "debian@production" {
		t.Errorf("stale policy: jobs %+v", fj.jobs[before:])
	}
	// So does Roller's reimage of the assigned image.
	fj.jobs[before].State = jobs.StateSucceeded
	if status, _, body := (call{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=reimage", "", op}).do(h); status != 200 ||
		fj.jobs[len(fj.jobs)-1].Image.Channel != "debian@production" {
		t.Errorf("Roller's reimage of the assigned image: %d %s, job image %+v", status, body, fj.jobs[len(fj.jobs)-1].Image)
	}
	fj.jobs[len(fj.jobs)-1].State = jobs.StateSucceeded
	n := len(fj.jobs)
	// A check-in with the right image submits nothing.
	req("POST", "/api/v1/check-in", `{"digest":"`+digest.String()+`"}`, "192.0.2.1:4000")
	if len(fj.jobs) != n {
		t.Errorf("a good check-in submitted a job")
	}
}

// A failed job is retried as it was asked: the same machine, probe and image, through its
// channel (which has moved on since); anything but a failed job is refused.
func TestRetryJob(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SyncMachines([]machines.Machine{{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}}})
	d1, _ := images.ParseDigest(strings.Repeat("ab", 32))
	d2, _ := images.ParseDigest(strings.Repeat("cd", 32))
	st.PutImage(images.Image{Name: "debian", Version: "12.1", Digest: d1})
	st.PutImage(images.Image{Name: "debian", Version: "12.2", Digest: d2})
	st.Promote("debian", "12.1", "production", "test")
	inv, _ := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	fj := &fakeJobs{}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), BMCs: &fakeBMCs{}, Jobs: fj, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	h := Authenticate(AuthConfig{AnonymousRead: true}, mux)
	op := &Principal{Name: "token ops", Scope: ScopeOperate}
	probe := `{"image":"debian@production","probe":{"kind":"tcp","port":2222}}`
	if code, _, body := (call{"POST", "/api/v1/machines/ms1-c1n1/reimage", probe, op}).do(h); code != 202 {
		t.Fatalf("reimage: %d %s", code, body)
	}
	fj.jobs[0].Probe = jobs.Probe{Kind: "tcp", Port: 2222}
	for _, c := range []struct {
		name   string
		call   call
		status int
		want   string
	}{
		{"retry without a scope", call{"POST", "/api/v1/jobs/job1/retry", "", nil}, 401, ""},
		{"retry of a reader", call{"POST", "/api/v1/jobs/job1/retry", "", &Principal{Name: "token r", Scope: ScopeRead}}, 403, ""},
		{"retry of a running job", call{"POST", "/api/v1/jobs/job1/retry", "", op}, 409, "only a failed job"},
		{"retry of no job", call{"POST", "/api/v1/jobs/job9/retry", "", op}, 404, "no job"},
	} {
		if code, _, body := c.call.do(h); code != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, code, body, c.status, c.want)
		}
	}
	fj.jobs[0].State = jobs.StateFailed
	st.Promote("debian", "12.2", "production", "test")
	code, _, body := (call{"POST", "/api/v1/jobs/job1/retry", "", op}).do(h)
	if code != 202 || len(fj.jobs) != 2 {
		t.Fatalf("retry: %d %s", code, body)
	}
	j := fj.jobs[1]
	if j.Machine != "ms1-c1n1" || j.Kind != jobs.KindReimage || j.Image.Digest != d2 || j.Image.Channel != "debian@production" ||
		j.By != "token ops, retrying job job1" {
		t.Errorf("the retry: %+v image %+v", j, j.Image)
	}
}
