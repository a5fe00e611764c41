package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func helloBody() HelloRequest {
	return HelloRequest{MAC: "52:54:00:99:00:11", Token: "tok1", AgentVersion: "test", UptimeSeconds: 4.25}
}

// serverHello decodes a hello strictly, as the server's API layer does (unknown fields are
// errors), so a renamed or extra field fails here.
func serverHello(t *testing.T, r *http.Request) HelloRequest {
	t.Helper()
	if r.Method != http.MethodPost || r.URL.Path != "/agent/v1/hello" {
		t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got struct {
		MAC           string  `json:"mac"`
		Token         string  `json:"token"`
		AgentVersion  string  `json:"agent_version"`
		UptimeSeconds float64 `json:"uptime_seconds"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Errorf("decode hello: %v", err)
	}
	return HelloRequest(got)
}

func testConfig() *Config {
	cfg := &Config{}
	cfg.setDefaults()
	return cfg
}

// Over a real socket: the first answer is 503, the second 200 with a JSON body.
func TestHelloRetriesThenAccepts(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []HelloRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := serverHello(t, r)
		mu.Lock()
		seen = append(seen, h)
		n := len(seen)
		mu.Unlock()
		if n == 1 {
			http.Error(w, "starting up", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"machine_id":"ms1-c10n1","action":"wait"}`)
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.HelloBackoff = 10 * time.Millisecond
	res, err := sendHello(context.Background(), srv.Client(), srv.URL+"/agent/v1/hello", helloBody, cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Attempts != 2 || string(res.Body) != `{"machine_id":"ms1-c10n1","action":"wait"}` {
		t.Errorf("result %+v %s", res, res.Body)
	}
	if len(seen) != 2 || seen[1] != helloBody() {
		t.Errorf("server saw %+v", seen)
	}
}

// Over a real socket: 403 is final, asked once.
func TestHelloRefused(t *testing.T) {
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serverHello(t, r)
		calls++
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"token: the token does not match"}`)
	}))
	defer srv.Close()
	_, err := sendHello(context.Background(), srv.Client(), srv.URL+"/agent/v1/hello", helloBody, testConfig(), testLog(t))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
	if !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error lacks the status or the server's reason: %v", err)
	}
	if calls != 1 {
		t.Errorf("server asked %d times", calls)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// inProcess serves requests with h without any socket, so that everything stays inside a
// synctest bubble and its fake clock.
func inProcess(h http.HandlerFunc) *http.Client {
	return &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		h(rec, r)
		return rec.Result(), nil
	})}
}

// statusSequence answers with the given statuses in turn (then 200), recording when each
// request came, on the bubble's clock.
type statusSequence struct {
	statuses []int
	headers  map[int]http.Header // by request index
	times    []time.Time
}

func (s *statusSequence) serve(w http.ResponseWriter, r *http.Request) {
	i := len(s.times)
	s.times = append(s.times, time.Now())
	for k, v := range s.headers[i] {
		w.Header()[k] = v
	}
	code := http.StatusOK
	if i < len(s.statuses) {
		code = s.statuses[i]
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"n":%d}`, i)
}

func TestHelloBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seq := &statusSequence{
			statuses: []int{503, 503, 429, 500},
			headers:  map[int]http.Header{2: {"Retry-After": {"7"}}},
		}
		res, err := sendHello(t.Context(), inProcess(seq.serve), "http://imaged/agent/v1/hello", helloBody, testConfig(), testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		if res.Attempts != 5 || string(res.Body) != `{"n":4}` {
			t.Fatalf("result %+v %s", res, res.Body)
		}
		// Waits: 1 s, 2 s (each plus up to 20% jitter), then Retry-After's 7 s exactly, then 8 s.
		want := []struct{ lo, hi time.Duration }{
			{time.Second, 1200 * time.Millisecond},
			{2 * time.Second, 2400 * time.Millisecond},
			{7 * time.Second, 7 * time.Second},
			{8 * time.Second, 9600 * time.Millisecond},
		}
		for i, w := range want {
			gap := seq.times[i+1].Sub(seq.times[i])
			if gap < w.lo || gap > w.hi {
				t.Errorf("wait before attempt %d: %v, want %v..%v", i+2, gap, w.lo, w.hi)
			}
		}
	})
}

func TestHelloStatusClasses(t *testing.T) {
	for _, tc := range []struct {
		status int
		retry  bool
	}{
		{200, false}, {204, false}, {400, false}, {401, false}, {403, false}, {404, false}, {409, false},
		{408, true}, {429, true}, {500, true}, {502, true}, {503, true}, {504, true},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				seq := &statusSequence{statuses: []int{tc.status}}
				res, err := sendHello(t.Context(), inProcess(seq.serve), "http://imaged/agent/v1/hello", helloBody, testConfig(), testLog(t))
				switch {
				case tc.status < 300:
					if err != nil || res.Attempts != 1 || res.Status != tc.status {
						t.Errorf("%d: %+v %v", tc.status, res, err)
					}
				case tc.retry:
					if err != nil || res.Attempts != 2 {
						t.Errorf("%d should be retried: %+v %v", tc.status, res, err)
					}
				default:
					if !errors.Is(err, ErrRefused) || len(seq.times) != 1 {
						t.Errorf("%d should be final: %v after %d requests", tc.status, err, len(seq.times))
					}
				}
			})
		})
	}
}

// A server that never answers: each attempt ends at HelloAttempt, then the backoff.
func TestHelloAttemptTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts []time.Time
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			starts = append(starts, time.Now())
			if len(starts) == 1 {
				<-r.Context().Done()
				return nil, r.Context().Err()
			}
			rec := httptest.NewRecorder()
			rec.WriteString("{}")
			return rec.Result(), nil
		})}
		res, err := sendHello(t.Context(), client, "http://imaged/agent/v1/hello", helloBody, testConfig(), testLog(t))
		if err != nil || res.Attempts != 2 {
			t.Fatalf("%+v %v", res, err)
		}
		gap := starts[1].Sub(starts[0])
		if gap < 11*time.Second || gap > 11200*time.Millisecond {
			t.Errorf("second attempt %v after the first, want 10 s timeout + 1..1.2 s backoff", gap)
		}
	})
}

func TestHelloGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seq := &statusSequence{statuses: make([]int, 1000)}
		for i := range seq.statuses {
			seq.statuses[i] = 503
		}
		start := time.Now()
		_, err := sendHello(t.Context(), inProcess(seq.serve), "http://imaged/agent/v1/hello", helloBody, testConfig(), testLog(t))
		took := time.Since(start)
		if err == nil || errors.Is(err, ErrRefused) {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(err.Error(), "no success within 5m0s") || !strings.Contains(err.Error(), "503") {
			t.Errorf("error does not say why: %v", err)
		}
		// 1+2+4+8+16 s, then every 30 s (+ jitter) until 5 min: 13 to 15 attempts.
		if took < 5*time.Minute || took > 5*time.Minute+time.Second || len(seq.times) < 13 || len(seq.times) > 15 {
			t.Errorf("gave up after %v and %d attempts", took, len(seq.times))
		}
	})
}
