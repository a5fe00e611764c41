package jobs

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/machines"
)

func TestNetProber(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	port := int(netip.MustParseAddrPort(srv.Listener.Addr().String()).Port())
	// A port that nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := int(netip.MustParseAddrPort(ln.Addr().String()).Port())
	ln.Close()

	m := machines.Machine{ID: "n1", IP: netip.MustParseAddr("127.0.0.1")}
	for _, tc := range []struct {
		m     machines.Machine
		p     Probe
		wantE string
	}{
		{m, Probe{Kind: "tcp", Port: port}, ""},
		{m, Probe{Kind: "tcp", Port: closed}, "refused"},
		{m, Probe{Kind: "http", Port: port, Path: "/ready", Status: 204}, ""},
		{m, Probe{Kind: "http", Port: port, Path: "/ready"}, "204 No Content, want 200"},
		{m, Probe{Kind: "http", Port: port, Path: "/nope", Status: 204}, "404"},
		{machines.Machine{ID: "n2"}, Probe{Kind: "tcp", Port: port}, "no address"},
		{m, Probe{CheckIn: true}, ""},
	} {
		err := NetProber{}.Probe(t.Context(), tc.m, tc.p)
		if tc.wantE == "" && err != nil || tc.wantE != "" && (err == nil || !strings.Contains(err.Error(), tc.wantE)) {
			t.Errorf("%+v on %q: %v, want %q", tc.p, tc.m.IP, err, tc.wantE)
		}
	}
}
