package api

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// The typed client through the in-process transport and over HTTP with a token gets the same
// answers and the same refusals; the in-process caller is the Principal it was given.
func TestClientTransports(t *testing.T) {
	h, inv, d := catalogServer(t)
	srv := httptest.NewServer(Authenticate(AuthConfig{Tokens: []Token{{Name: "ops", Scope: ScopeAdmin, SHA256: hashOf("ops-token")}}}, h))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	for _, tc := range []struct {
		name string
		c    *Client
		by   string // who the catalog records
	}{
		{"in-process", NewHandlerClient(h, Principal{Name: "alice", Scope: ScopeAdmin}, "alice"), "alice"},
		{"https with a token", NewClient(u, "ops-token", "alice"), "token ops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			version := strings.ReplaceAll(tc.name, " ", "-")
			img, err := tc.c.Register(ctx, RegisterRequest{Name: "debian", Version: version, Digest: d.String()})
			if err != nil || img.Digest != d || img.ImportedBy != tc.by {
				t.Fatalf("register: %+v %v", img, err)
			}
			ch, err := tc.c.Promote(ctx, img.Ref(), "stable")
			if err != nil || ch.Version != version || ch.History[len(ch.History)-1].By != tc.by {
				t.Errorf("promote: %+v %v", ch, err)
			}
			info, err := tc.c.Image(ctx, images.Ref{Name: "debian", Tag: "stable"})
			if err != nil || info.Image.Version != version || info.Image.Channel != "debian@stable" || len(info.Channels) != 1 {
				t.Errorf("image: %+v %v", info, err)
			}
			if rep, err := tc.c.Assign(ctx, "ms1-c1n1", images.Ref{Name: "debian", Tag: "stable"}); err != nil || rep.Machine.AssignedImage != d {
				t.Errorf("assign: %+v %v", rep, err)
			}
			// A refusal is the API's, whichever way it came.
			_, err = tc.c.DeleteImage(ctx, img.Ref())
			var re *ResponseError
			if !errors.As(err, &re) || re.Status != http.StatusConflict || re.Body.Field != "ref" || !strings.Contains(err.Error(), "in use") {
				t.Errorf("delete of an image in use: %v", err)
			}
			if _, err := tc.c.MachineEvents(ctx, "nope"); !errors.As(err, &re) || re.Status != http.StatusNotFound {
				t.Errorf("events of a missing machine: %v", err)
			}
			if ev, err := tc.c.MachineEvents(ctx, "ms1-c1n1"); err != nil || len(ev) == 0 || !strings.Contains(ev[len(ev)-1].Message, "by "+tc.by) {
				t.Errorf("events: %+v %v", ev, err)
			}
			// Jobs are not running in this API: its own 503.
			if _, err := tc.c.Jobs(ctx, jobs.Filter{Machine: "ms1-c1n1"}); !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
				t.Errorf("jobs: %v", err)
			}
		})
	}
	if m, _ := inv.Machine("ms1-c1n1"); m.AssignedImage != d {
		t.Errorf("the inventory did not see the assignments: %+v", m)
	}
}

// The in-process transport streams (the event stream is read while its handler runs) and turns a
// handler's panic into an error instead of a crash.
func TestHandlerTransport(t *testing.T) {
	h, inv, _ := catalogServer(t)
	c := NewHandlerClient(h, Principal{Name: "alice", Scope: ScopeAdmin}, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // ends the stream if the event never comes
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://imaged/api/v1/events", nil)
	resp, err := c.http.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("event stream: %v %v", resp, err)
	}
	inv.Event(machines.Event{Machine: "ms1-c1n1", Kind: "test", Message: "streamed while the handler runs"})
	found := false
	for sc := bufio.NewScanner(resp.Body); !found && sc.Scan(); {
		found = strings.Contains(sc.Text(), "streamed while the handler runs")
	}
	if !found {
		t.Error("the event did not come through the stream")
	}
	cancel()
	resp.Body.Close()

	panicky := NewHandlerClient(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }), Principal{}, "")
	if err := panicky.Do(t.Context(), "GET", "/x", nil, nil); err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("a panicking handler: %v", err)
	}
}
