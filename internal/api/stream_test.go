package api

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/internal/machines"
)

func TestEventStream(t *testing.T) {
	h, inv := newServer(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/events?machine=ms1-c1n1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %v", resp.Status, resp.Header)
	}
	rd := bufio.NewReader(resp.Body)
	if l, _ := rd.ReadString('\n'); !strings.HasPrefix(l, ": imaged event stream") {
		t.Fatalf("first line %q", l)
	}
	rd.ReadString('\n')
	inv.Event(machines.Event{Machine: "other", Kind: "dhcp", Message: "not for this stream"})
	inv.Event(machines.Event{Machine: "ms1-c1n1", Kind: "power", Message: "power on"})
	got := make(chan string, 1)
	go func() {
		var b strings.Builder
		for range 2 {
			l, _ := rd.ReadString('\n')
			b.WriteString(l)
		}
		got <- b.String()
	}()
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "event: power\ndata: {") || !strings.Contains(s, `"message":"power on"`) {
			t.Errorf("event: %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
	if w := httptest.NewRecorder(); true {
		r := httptest.NewRequest("GET", "/api/v1/events?machine=nope", nil)
		h.ServeHTTP(w, r)
		if w.Code != 404 {
			t.Errorf("stream of an unknown machine: %d", w.Code)
		}
	}
}
