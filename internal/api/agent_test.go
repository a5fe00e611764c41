package api

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/store"
)

func agentReq(mux http.Handler, method, path, token, mac, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if mac != "" {
		r.Header.Set("X-Imaged-MAC", mac)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func TestAgentWorkLoop(t *testing.T) {
	mux, inv := newServer(t)
	st := inv.Store()
	const mac = "52:54:00:99:00:11"
	hw, _ := net.ParseMAC(mac)
	tok, _ := inv.IssueToken("ms1-c1n1", hw, "agent")
	digest := "sha256:" + strings.Repeat("ab", 32)
	st.PutImage(store.Image{Name: "debian", Version: "12.1", Digest: digest, Size: 1 << 28, ManifestHash: "mh", DataBlocks: 10})

	for _, c := range []struct {
		token, mac string
		status     int
	}{{"", mac, 401}, {tok, "", 400}, {tok, "52:54:00:99:00:12", 403}, {"nope", mac, 403}} {
		if w := agentReq(mux, "GET", "/agent/v1/plan", c.token, c.mac, ""); w.Code != c.status {
			t.Errorf("plan with token %q mac %q: %d, want %d", c.token, c.mac, w.Code, c.status)
		}
	}
	w := agentReq(mux, "GET", "/agent/v1/plan", tok, mac, "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"action": "wait"`) {
		t.Fatalf("plan without an assignment: %d %s", w.Code, w.Body)
	}
	st.SyncMachines([]store.Machine{{ID: "ms1-c1n1", MACs: []string{mac}, Boot: "agent", DiskSerial: "WD-1234"}})
	st.AssignImage("ms1-c1n1", digest, "")
	w = agentReq(mux, "GET", "/agent/v1/plan", tok, mac, "")
	var plan agentapi.Plan
	json.Unmarshal(w.Body.Bytes(), &plan)
	if plan.Action != "write" || plan.Image.BlobURL != "http://10.99.0.1:8080/images/"+strings.Repeat("ab", 32)+"/blob" || plan.Image.ManifestHash != "mh" || plan.Target.Serial != "WD-1234" {
		t.Fatalf("plan: %s", w.Body)
	}
	if w := agentReq(mux, "POST", "/agent/v1/progress", tok, mac, `{"digest": "x", "bytes_done": 5, "bytes_total": 4}`); w.Code != 400 {
		t.Errorf("impossible progress: %d", w.Code)
	}
	if w := agentReq(mux, "POST", "/agent/v1/progress", tok, mac, `{"digest": "x", "bytes_done": 5, "bytes_total": 10}`); w.Code != 204 {
		t.Errorf("progress: %d %s", w.Code, w.Body)
	}
	if p, ok := inv.ProgressOf("ms1-c1n1"); !ok || p.BytesDone != 5 {
		t.Errorf("progress not kept: %+v", p)
	}
	result := func(body string) *httptest.ResponseRecorder {
		return agentReq(mux, "POST", "/agent/v1/result", tok, mac, body)
	}
	current := func() string { m, _ := st.Machine("ms1-c1n1"); return m.CurrentImage }
	// The agent's word alone is not enough: each of these is refused and nothing is recorded.
	for _, bad := range []string{
		`{"digest": "sha256:` + strings.Repeat("cd", 32) + `", "manifest_hash": "mh", "blocks_verified": 10}`,
		`{"digest": "` + digest + `", "manifest_hash": "other", "blocks_verified": 10}`,
		`{"digest": "` + digest + `", "manifest_hash": "mh", "blocks_verified": 9}`,
	} {
		if w := result(bad); w.Code != 409 || current() != "" {
			t.Errorf("result %s: %d %s, current %q", bad, w.Code, w.Body, current())
		}
	}
	if w := result(`{"digest": "` + digest + `", "error": "checksum mismatch in block 7", "failed_block": 7}`); w.Code != 200 || !strings.Contains(w.Body.String(), `"accepted": false`) || current() != "" {
		t.Errorf("failure result: %d %s", w.Code, w.Body)
	}
	if w := result(`{"digest": "` + digest + `", "manifest_hash": "mh", "blocks_verified": 10, "device": "/dev/vda"}`); w.Code != 200 || !strings.Contains(w.Body.String(), `"accepted": true`) || current() != digest {
		t.Errorf("good result: %d %s, current %q", w.Code, w.Body, current())
	}
	// The same result again (a lost reply): accepted again, not a 500 the agent would retry.
	if w := result(`{"digest": "` + digest + `", "manifest_hash": "mh", "blocks_verified": 10, "device": "/dev/vda"}`); w.Code != 200 || !strings.Contains(w.Body.String(), `"accepted": true`) {
		t.Errorf("repeated good result: %d %s", w.Code, w.Body)
	}
	// A result for nothing assigned is refused with a 4xx, so the agent stops sending it.
	if w := result(`{"digest": "sha256:` + strings.Repeat("ef", 32) + `", "manifest_hash": "mh", "blocks_verified": 10}`); w.Code != 409 || current() != digest {
		t.Errorf("result with no assignment: %d %s, current %q", w.Code, w.Body, current())
	}
	ev, _ := inv.Events("ms1-c1n1", 0)
	var msgs []string
	for _, e := range ev {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"result refused", "failed to write debian@12.1: checksum mismatch in block 7", "wrote and verified debian@12.1 on /dev/vda"} {
		if !strings.Contains(all, want) {
			t.Errorf("events lack %q:\n%s", want, all)
		}
	}
}
