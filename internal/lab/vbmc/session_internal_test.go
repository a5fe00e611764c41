package vbmc

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// serve runs one request through the handler, in the synctest bubble (no sockets).
func serve(s *Server, method, path, body, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		r.Header.Set("X-Auth-Token", token)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

// Sessions end after SessionTimeout without a request; each request restarts the clock, and an
// expired session frees its slot in the table.
func TestSessionTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := New(Config{PlainHTTP: true, Username: "admin", Password: "pw", SessionTimeout: time.Minute, MaxSessions: 1}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		loginBody := `{"UserName":"admin","Password":"pw"}`
		w := serve(s, "POST", "/redfish/v1/SessionService/Sessions", loginBody, "")
		tok := w.Header().Get("X-Auth-Token")
		if w.Code != http.StatusCreated || tok == "" {
			t.Fatalf("login: %d %s", w.Code, w.Body)
		}
		if w := serve(s, "POST", "/redfish/v1/SessionService/Sessions", loginBody, ""); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("second login with a table of 1: %d", w.Code)
		}
		for range 3 { // used every 50 s, the session lives on past its first minute
			time.Sleep(50 * time.Second)
			if w := serve(s, "GET", "/redfish/v1/Systems", "", tok); w.Code != http.StatusOK {
				t.Fatalf("session expired while in use: %d", w.Code)
			}
		}
		if w := serve(s, "GET", "/redfish/v1/SessionService", "", tok); !strings.Contains(w.Body.String(), `"SessionTimeout": 60`) {
			t.Errorf("SessionTimeout not in seconds: %s", w.Body)
		}
		time.Sleep(61 * time.Second)
		if w := serve(s, "GET", "/redfish/v1/Systems", "", tok); w.Code != http.StatusUnauthorized {
			t.Fatalf("idle session still valid: %d", w.Code)
		}
		if w := serve(s, "POST", "/redfish/v1/SessionService/Sessions", loginBody, ""); w.Code != http.StatusCreated {
			t.Fatalf("expired session kept its slot: %d %s", w.Code, w.Body)
		}
	})
}

func TestTailLines(t *testing.T) {
	// Lines long enough that the tail crosses the 32 KiB blocks read backwards.
	var b strings.Builder
	for i := range 5000 {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 40))
		b.WriteString("\n")
	}
	text := b.String()
	lines := strings.SplitAfter(text, "\n")
	lines = lines[:len(lines)-1]
	for _, n := range []int{0, 1, 2, 819, 820, 4999, 5000, 6000} {
		got, err := tailLines(strings.NewReader(text), n)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Join(lines[max(0, len(lines)-n):], "")
		if string(got) != want {
			t.Errorf("tail %d: %d bytes, want %d", n, len(got), len(want))
		}
	}
	if got, _ := tailLines(strings.NewReader(""), 5); len(got) != 0 {
		t.Errorf("empty file: %q", got)
	}
	if got, _ := tailLines(strings.NewReader("no newline"), 5); string(got) != "no newline" {
		t.Errorf("one partial line: %q", got)
	}
}
