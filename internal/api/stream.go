package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// streamHeartbeat keeps proxies from closing an idle event stream.
const streamHeartbeat = 15 * time.Second

// CloseStreams ends every event stream (the HTTP server's Shutdown waits for handlers, and a
// stream would otherwise run until its client leaves).
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// eventStream is GET /api/v1/events: Server-Sent Events, one per machine event (DHCP, scripts,
// hellos, writes, power, job phases), as they are recorded; ?machine= keeps one machine's.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request) {
	machine := r.URL.Query().Get("machine")
	if machine != "" {
		if _, ok := s.knownMachine(w, "machine", machine); !ok {
			return
		}
	}
	rc := http.NewResponseController(w)
	events, cancel := s.inv.Subscribe()
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": imaged event stream\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(streamHeartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-tick.C:
			fmt.Fprint(w, ": heartbeat\n\n")
		case e := <-events:
			if machine != "" && e.Machine != machine {
				continue
			}
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Kind, b)
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
