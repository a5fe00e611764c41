package osinit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos"
)

var testDigest = images.Digest(sha256.Sum256([]byte("the image")))

func testURL() *url.URL { u, _ := url.Parse("http://10.99.0.1:8080"); return u }

func testClient(t *testing.T) *client {
	cfg := Config{URL: testURL(), ImageSize: 1, RequestTimeout: 200 * time.Millisecond, RetryBackoff: time.Millisecond, RetryBackoffMax: 4 * time.Millisecond}
	cfg.setDefaults()
	return newClient(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// script is an imaged fake: each request gets the next step ("close" drops the connection
// without an answer, "hang" waits until the client gives up, a number answers that status);
// after the last step it answers 200 with ok.
type script struct {
	mu    sync.Mutex
	steps []string
	ok    string
	reqs  []recorded
}

type recorded struct {
	method, path, ctype, body string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	i := len(s.reqs)
	s.reqs = append(s.reqs, recorded{r.Method, r.URL.Path, r.Header.Get("Content-Type"), string(body)})
	step := ""
	if i < len(s.steps) {
		step = s.steps[i]
	}
	s.mu.Unlock()
	switch step {
	case "":
		fmt.Fprint(w, s.ok)
	case "close":
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	case "hang":
		<-r.Context().Done()
	default:
		var code int
		fmt.Sscan(step, &code)
		http.Error(w, "step "+step, code)
	}
}

func (s *script) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func serve(t *testing.T, s *script) *url.URL {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// A dropped connection, a hung request, 503, 500, 408 and 429 are all retried until the 200.
func TestCheckInRetries(t *testing.T) {
	s := &script{steps: []string{"close", "hang", "503", "500", "408", "429"}, ok: `{"stale": true}`}
	base := serve(t, s)
	res, a, err := checkIn(context.Background(), testClient(t), base, testDigest)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stale || a.Status != 200 || a.Attempts != 7 {
		t.Errorf("result %+v, answer %d after %d attempts", res, a.Status, a.Attempts)
	}
	reqs := s.requests()
	if len(reqs) != 7 {
		t.Fatalf("imaged got %d requests, want 7", len(reqs))
	}
	want := `{"digest":"` + testDigest.String() + `"}`
	for i, r := range reqs {
		if r.method != "POST" || r.path != "/api/v1/check-in" || r.ctype != "application/json" || r.body != want {
			t.Errorf("request %d: %+v, want POST /api/v1/check-in %s", i, r, want)
		}
	}
}

// Any other 4xx is final: one request, ErrRefused, and the status and body in the error.
func TestCheckInStopsOn4xx(t *testing.T) {
	for _, code := range []int{400, 403, 404, 409, 422} {
		s := &script{steps: []string{fmt.Sprint(code)}}
		_, a, err := checkIn(context.Background(), testClient(t), serve(t, s), testDigest)
		if !errors.Is(err, ErrRefused) || a.Status != 0 {
			t.Errorf("%d: %v", code, err)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("answered %d", code)) || !strings.Contains(err.Error(), "step") {
			t.Errorf("%d: the error does not say what imaged answered: %v", code, err)
		}
		if n := len(s.requests()); n != 1 {
			t.Errorf("%d: %d requests, want 1", code, n)
		}
	}
}

// A 2xx whose body is not {"stale": bool} is still accepted, and says why it is odd.
func TestCheckInOddBody(t *testing.T) {
	s := &script{ok: "thanks"}
	_, a, err := checkIn(context.Background(), testClient(t), serve(t, s), testDigest)
	if a.Status != 200 || err == nil || !strings.Contains(err.Error(), "thanks") {
		t.Errorf("answer %+v, err %v", a, err)
	}
}

// Retrying stops when ctx ends, with the last failure in the error.
func TestCheckInCancelled(t *testing.T) {
	s := &script{steps: strings.Fields(strings.Repeat("503 ", 10000))}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := checkIn(ctx, testClient(t), serve(t, s), testDigest)
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "503") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
}

func TestFetchMetadata(t *testing.T) {
	s := &script{steps: []string{"502"}, ok: `{"machine_id":"ms1-c1n1","worker_group":"lab","worker_type":"qemu-bios",
		"assigned_image":"` + testDigest.String() + `","hostname":"ms1-c1n1.lab"}`}
	base := serve(t, s)
	base.Path = "/prefix"
	md, raw, err := fetchMetadata(context.Background(), testClient(t), base)
	if err != nil {
		t.Fatal(err)
	}
	want := labos.Metadata{MachineID: "ms1-c1n1", WorkerGroup: "lab", WorkerType: "qemu-bios", AssignedImage: testDigest.String(), Hostname: "ms1-c1n1.lab"}
	if md != want || !strings.Contains(compactJSON(raw), `"machine_id":"ms1-c1n1","worker_group"`) {
		t.Errorf("metadata %+v (raw %s), want %+v", md, raw, want)
	}
	for _, r := range s.requests() {
		if r.method != "GET" || r.path != "/prefix/api/v1/metadata" {
			t.Errorf("request %+v", r)
		}
	}
	s = &script{ok: "<html>"}
	if _, _, err := fetchMetadata(context.Background(), testClient(t), serve(t, s)); err == nil || !strings.Contains(err.Error(), "not metadata JSON") {
		t.Errorf("HTML for metadata: %v", err)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The waits between attempts, on synctest's clock: 1 s, 2 s (each plus up to 20% jitter), a
// Retry-After of 7 s exactly, then 8 s, and never more than 30 s.
func TestCheckInBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		statuses := []int{503, 503, 429, 500, 500, 500, 500, 500, 503}
		var times []time.Time
		c := &client{retry: agent.Retry{
			HTTP: &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
				i := len(times)
				times = append(times, time.Now())
				rec := httptest.NewRecorder()
				if i == 2 {
					rec.Header().Set("Retry-After", "7")
				}
				if i == 8 {
					rec.Header().Set("Retry-After", "3600")
				}
				if i < len(statuses) {
					rec.WriteHeader(statuses[i])
				}
				json.NewEncoder(rec).Encode(labos.CheckInResponse{})
				return rec.Result(), nil
			})},
			Attempt: 10 * time.Second, Backoff: time.Second, MaxBackoff: 30 * time.Second, Log: slog.New(slog.DiscardHandler),
		}}
		_, a, err := checkIn(t.Context(), c, testURL(), testDigest)
		if err != nil || a.Attempts != 10 {
			t.Fatalf("%+v %v", a, err)
		}
		want := []struct{ lo, hi time.Duration }{
			{time.Second, 1200 * time.Millisecond},
			{2 * time.Second, 2400 * time.Millisecond},
			{7 * time.Second, 7 * time.Second},
			{8 * time.Second, 9600 * time.Millisecond},
			{16 * time.Second, 19200 * time.Millisecond},
			{30 * time.Second, 36 * time.Second},
			{30 * time.Second, 36 * time.Second},
			{30 * time.Second, 36 * time.Second},
			{30 * time.Second, 30 * time.Second}, // Retry-After: 3600, capped
		}
		for i, w := range want {
			gap := times[i+1].Sub(times[i])
			if gap < w.lo || gap > w.hi {
				t.Errorf("wait before attempt %d: %v, want %v..%v", i+2, gap, w.lo, w.hi)
			}
		}
	})
}
