package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

// agentWorld is the agent API over a real store and blob store holding one image (40 blocks
// and a short last one; blocks 10 to 19 are zero), assigned to ms1-c1n1.
type agentWorld struct {
	mux   http.Handler
	inv   *inventory.Inventory
	st    *store.Store
	jobs  *signalJobs
	img   []byte
	image images.Image
	m     *images.Manifest
}

// signalJobs records the signals the API sends to jobs, with their reasons.
type signalJobs struct {
	fakeJobs
	sigs []jobs.Signal
}

func (f *signalJobs) Observe(machine string, s jobs.Signal) { f.sigs = append(f.sigs, s) }

// resultSignals returns the result signals sent so far.
func (f *signalJobs) resultSignals() []jobs.Signal {
	var out []jobs.Signal
	for _, s := range f.sigs {
		if s.Kind == jobs.SignalResult {
			out = append(out, s)
		}
	}
	return out
}

const agentMAC = "52:54:00:99:00:11"

func newAgentWorld(t *testing.T) *agentWorld {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SyncMachines([]machines.Machine{{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC(agentMAC)}, Boot: "agent", DiskSerial: "WD-1234"}})
	inv, err := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 40*images.BlockSize+1000)
	rand.Read(img)
	clear(img[10*images.BlockSize : 20*images.BlockSize])
	d, m, err := blobs.Import(context.Background(), bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	mh, _ := m.Hash()
	image := images.Image{Name: "debian", Version: "12.1", Digest: d, Size: int64(len(img)), ManifestHash: mh, DataBlocks: 31}
	if _, err := st.PutImage(image); err != nil {
		t.Fatal(err)
	}
	if err := st.AssignImage("ms1-c1n1", d, ""); err != nil {
		t.Fatal(err)
	}
	sj := &signalJobs{}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, blobs, nil), Blobs: blobs, Jobs: sj, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	return &agentWorld{mux: Authenticate(AuthConfig{}, mux), inv: inv, st: st, jobs: sj, img: img, image: image, m: m}
}

// req sends an agent request from remote ("" for httptest's 192.0.2.1).
func (w *agentWorld) req(method, path, bearer, remote, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if remote != "" {
		r.RemoteAddr = remote + ":40000"
	}
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	r.Header.Set(agentapi.HeaderMAC, agentMAC)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	w.mux.ServeHTTP(rec, r)
	return rec
}

// hello boots the machine's agent: a token, then a hello, and returns the session.
func (w *agentWorld) hello(t *testing.T) string {
	t.Helper()
	tok := issue(t, w.inv, "ms1-c1n1", agentMAC)
	rec := w.req("POST", "/agent/v1/hello", "", "", fmt.Sprintf(`{"mac": %q, "token": %q}`, agentMAC, tok))
	var reply agentapi.HelloReply
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &reply) != nil || reply.Session == "" || reply.MachineID != "ms1-c1n1" {
		t.Fatalf("hello: %d %s", rec.Code, rec.Body)
	}
	return reply.Session
}

// challenge asks for a challenge with session sess.
func (w *agentWorld) challenge(t *testing.T, sess string) agentapi.Challenge {
	t.Helper()
	rec := w.req("GET", "/agent/v1/challenge", sess, "", "")
	var c agentapi.Challenge
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &c) != nil {
		t.Fatalf("challenge: %d %s", rec.Code, rec.Body)
	}
	return c
}

// prove answers c from disk, as the agent does.
func prove(c agentapi.Challenge, digest string, disk []byte) *agentapi.Proof {
	nonce, _ := hex.DecodeString(c.Nonce)
	p := &agentapi.Proof{Nonce: c.Nonce}
	for _, b := range c.Blocks {
		end := min(int64(len(disk)), (b+1)*images.BlockSize)
		p.MACs = append(p.MACs, hex.EncodeToString(agentapi.ProofMAC(nonce, digest, b, disk[b*images.BlockSize:end])))
	}
	return p
}

// goodResult is what a real agent reports after writing the image.
func (w *agentWorld) goodResult() agentapi.Result {
	return agentapi.Result{Digest: w.image.Digest.String(), ManifestHash: w.image.ManifestHash.String(), Device: "/dev/vda",
		BytesFetched: 31 * images.BlockSize, BytesWritten: 30*images.BlockSize + 1000, BytesZeroed: 10 * images.BlockSize,
		BlocksVerified: 31, Seconds: 1.5}
}

func (w *agentWorld) result(sess string, r agentapi.Result) *httptest.ResponseRecorder {
	b, _ := json.Marshal(r)
	return w.req("POST", "/agent/v1/result", sess, "", string(b))
}

func (w *agentWorld) current() images.Digest {
	m, _ := w.st.Machine("ms1-c1n1")
	return m.CurrentImage
}

func TestAgentWorkLoop(t *testing.T) {
	w := newAgentWorld(t)
	sess := w.hello(t)
	for _, c := range []struct {
		bearer, remote string
		status         int
	}{{"", "", 401}, {"nope", "", 403}, {sess, "192.0.2.7", 403}} {
		if rec := w.req("GET", "/agent/v1/plan", c.bearer, c.remote, ""); rec.Code != c.status {
			t.Errorf("plan with session %q from %q: %d, want %d", c.bearer, c.remote, rec.Code, c.status)
		}
	}
	rec := w.req("GET", "/agent/v1/plan", sess, "", "")
	var plan agentapi.Plan
	json.Unmarshal(rec.Body.Bytes(), &plan)
	if plan.Action != "write" || plan.Image.BlobURL != "http://10.99.0.1:8080/images/"+w.image.Digest.Hex()+"/blob" || plan.Image.ManifestHash != w.image.ManifestHash.String() || plan.Target.Serial != "WD-1234" {
		t.Fatalf("plan: %s", rec.Body)
	}
	if rec := w.req("POST", "/agent/v1/progress", sess, "", `{"digest": "x", "bytes_done": 5, "bytes_total": 4}`); rec.Code != 400 {
		t.Errorf("impossible progress: %d", rec.Code)
	}
	if rec := w.req("POST", "/agent/v1/progress", sess, "", `{"digest": "x", "bytes_done": 5, "bytes_total": 10}`); rec.Code != 204 {
		t.Errorf("progress: %d %s", rec.Code, rec.Body)
	}
	if p, ok := w.inv.ProgressOf("ms1-c1n1"); !ok || p.BytesDone != 5 {
		t.Errorf("progress not kept: %+v", p)
	}
	fail := agentapi.Result{Digest: w.image.Digest.String(), Error: "checksum mismatch in block 7"}
	if rec := w.result(sess, fail); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"accepted": false`) || !w.current().IsZero() {
		t.Errorf("failure result: %d %s", rec.Code, rec.Body)
	}
	good := w.goodResult()
	good.Proof = prove(w.challenge(t, sess), w.image.Digest.String(), w.img)
	if rec := w.result(sess, good); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"accepted": true`) || w.current() != w.image.Digest {
		t.Fatalf("good result: %d %s, current %q", rec.Code, rec.Body, w.current())
	}
	// The same result again (a lost reply): accepted again, not a 500 the agent would retry.
	if rec := w.result(sess, good); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"accepted": true`) {
		t.Errorf("repeated good result: %d %s", rec.Code, rec.Body)
	}
	// A result for nothing assigned is refused with a 4xx, so the agent stops sending it.
	other := good
	other.Digest = "sha256:" + strings.Repeat("ef", 32)
	if rec := w.result(sess, other); rec.Code != 409 || w.current() != w.image.Digest {
		t.Errorf("result with no assignment: %d %s", rec.Code, rec.Body)
	}
	ev, _ := w.inv.Events("ms1-c1n1", 0)
	var msgs []string
	for _, e := range ev {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"failed to write debian@12.1: checksum mismatch in block 7", "wrote and verified debian@12.1 on /dev/vda", "proof of possession checked"} {
		if !strings.Contains(all, want) {
			t.Errorf("events lack %q:\n%s", want, all)
		}
	}
	sigs := w.jobs.resultSignals()
	if len(sigs) != 2 || !sigs[1].Verified || sigs[0].Verified {
		t.Errorf("result signals: %+v", sigs)
	}
}

// TestForgedWriteRefused performs the attack of issue 11's first finding: with a session, an
// agent that wrote nothing posts back what the plan handed out (digest, manifest hash) with any
// counts, or with the right counts but no proof, or a proof of a disk that holds zeros (what
// /dev/null reads back). Each is refused, nothing is recorded as running, and the job is told
// why. On the server before the fix, the first forgery alone was accepted.
func TestForgedWriteRefused(t *testing.T) {
	w := newAgentWorld(t)
	sess := w.hello(t)
	good := w.goodResult()
	forged := agentapi.Result{Digest: w.image.Digest.String(), ManifestHash: w.image.ManifestHash.String(), Device: "/dev/null", BlocksVerified: 999999}
	noProof := good
	zeroDisk := func() agentapi.Result {
		r := good
		r.Proof = prove(w.challenge(t, sess), w.image.Digest.String(), make([]byte, len(w.img)))
		return r
	}
	for _, c := range []struct {
		name   string
		r      agentapi.Result
		field  string
		reason string
	}{
		{"counts from nowhere", forged, "digest", "999999 blocks verified, the manifest has 31"},
		{"bytes that do not add up", func() agentapi.Result { r := good; r.BytesWritten = 0; return r }(), "digest", "bytes written"},
		{"overflowing counts", func() agentapi.Result {
			r := good
			r.BytesWritten, r.BytesZeroed, r.BytesSkipped = 1<<62, 1<<62, 1<<63-1
			return r
		}(), "digest", "bytes written"},
		{"no proof", noProof, "proof", "no proof of possession"},
		{"a disk of zeros", agentapi.Result{}, "proof", "does not match the image"},
	} {
		before := len(w.jobs.resultSignals())
		switch c.name {
		case "no proof":
			w.challenge(t, sess) // a challenge is outstanding, but the result does not answer it
		case "a disk of zeros":
			c.r = zeroDisk()
		}
		rec := w.result(sess, c.r)
		var e Error
		json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != 409 || e.Field != c.field || !strings.Contains(e.Error, c.reason) {
			t.Errorf("%s: %d %s", c.name, rec.Code, rec.Body)
		}
		if !w.current().IsZero() {
			t.Fatalf("%s: the machine is recorded as running %s", c.name, w.current())
		}
		sigs := w.jobs.resultSignals()
		if len(sigs) != before+1 || sigs[len(sigs)-1].Verified || !strings.Contains(sigs[len(sigs)-1].Reason, c.reason) {
			t.Errorf("%s: the job was not told why: %+v", c.name, sigs[before:])
		}
	}
	// A proof answers its challenge once: the real disk's proof for a used challenge fails.
	c := w.challenge(t, sess)
	withProof := good
	withProof.Proof = prove(c, w.image.Digest.String(), w.img)
	withProof.Proof.MACs[0] = strings.Repeat("00", 32)
	if rec := w.result(sess, withProof); rec.Code != 409 {
		t.Fatalf("a wrong MAC: %d %s", rec.Code, rec.Body)
	}
	withProof.Proof = prove(c, w.image.Digest.String(), w.img)
	if rec := w.result(sess, withProof); rec.Code != 409 || !strings.Contains(rec.Body.String(), `"field": "challenge"`) || !w.current().IsZero() {
		t.Errorf("a second answer to a used challenge: %d %s", rec.Code, rec.Body)
	}
	// And the honest agent, with a fresh challenge, is accepted.
	withProof.Proof = prove(w.challenge(t, sess), w.image.Digest.String(), w.img)
	if rec := w.result(sess, withProof); rec.Code != 200 || w.current() != w.image.Digest {
		t.Errorf("honest result: %d %s", rec.Code, rec.Body)
	}
}

// TestChallengeBlocks: a challenge names distinct data blocks only, block 0 among them, and a
// fresh nonce each time.
func TestChallengeBlocks(t *testing.T) {
	w := newAgentWorld(t)
	sess := w.hello(t)
	seen := map[string]bool{}
	for range 20 {
		c := w.challenge(t, sess)
		if seen[c.Nonce] || len(c.Nonce) != 64 {
			t.Fatalf("nonce %q repeated or short", c.Nonce)
		}
		seen[c.Nonce] = true
		if len(c.Blocks) != ChallengeBlocks || c.Blocks[0] != 0 {
			t.Fatalf("blocks %v", c.Blocks)
		}
		for i, b := range c.Blocks {
			if w.m.Blocks[b].Zero || (i > 0 && b <= c.Blocks[i-1]) || b > 40 {
				t.Fatalf("blocks %v: %d is zero, repeated or out of the image", c.Blocks, b)
			}
		}
	}
}

// TestChallengeLost: a proof for a challenge the server no longer has (it restarted) is sent
// back for a new challenge, without failing the job.
func TestChallengeLost(t *testing.T) {
	w := newAgentWorld(t)
	sess := w.hello(t)
	r := w.goodResult()
	r.Proof = prove(w.challenge(t, sess), w.image.Digest.String(), w.img)
	w2 := *w
	// Another API over the same inventory: the daemon after a restart.
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: w.inv, Catalog: catalog.New(w.st, nil, nil), Jobs: w.jobs, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	w2.mux = mux
	rec := w2.result(sess, r)
	if rec.Code != 409 || !strings.Contains(rec.Body.String(), `"field": "challenge"`) || len(w.jobs.resultSignals()) != 0 {
		t.Errorf("result after a restart: %d %s, signals %+v", rec.Code, rec.Body, w.jobs.resultSignals())
	}
}

// TestSessionBoundToHello: a session is good from the hello's address only, for the MAC it was
// issued for, and only until the next hello of the machine replaces it. The boot token is used
// up by the hello: another hello with it is refused, except the same agent asking again.
func TestSessionBoundToHello(t *testing.T) {
	w := newAgentWorld(t)
	tok := issue(t, w.inv, "ms1-c1n1", agentMAC)
	hello := func(remote string) *httptest.ResponseRecorder {
		return w.req("POST", "/agent/v1/hello", "", remote, fmt.Sprintf(`{"mac": %q, "token": %q}`, agentMAC, tok))
	}
	first := hello("")
	var r1 agentapi.HelloReply
	json.Unmarshal(first.Body.Bytes(), &r1)
	if first.Code != 200 || r1.Session == "" {
		t.Fatalf("hello: %d %s", first.Code, first.Body)
	}
	// Another host replaying the token (it crossed the network in clear text in the script).
	if rec := hello("192.0.2.66"); rec.Code != 403 || !strings.Contains(rec.Body.String(), "already used") {
		t.Errorf("replayed token from another address: %d %s", rec.Code, rec.Body)
	}
	if rec := w.req("GET", "/agent/v1/plan", r1.Session, "192.0.2.66", ""); rec.Code != 403 {
		t.Errorf("session from another address: %d", rec.Code)
	}
	r := httptest.NewRequest("GET", "/agent/v1/plan", nil)
	r.Header.Set("Authorization", "Bearer "+r1.Session)
	r.Header.Set(agentapi.HeaderMAC, "52:54:00:99:00:12")
	rec := httptest.NewRecorder()
	w.mux.ServeHTTP(rec, r)
	if rec.Code != 403 {
		t.Errorf("session for another MAC: %d", rec.Code)
	}
	// The agent that did not get the reply asks again: a new session replaces the first.
	again := hello("")
	var r2 agentapi.HelloReply
	json.Unmarshal(again.Body.Bytes(), &r2)
	if again.Code != 200 || r2.Session == "" || r2.Session == r1.Session {
		t.Fatalf("hello again: %d %s", again.Code, again.Body)
	}
	if rec := w.req("GET", "/agent/v1/plan", r1.Session, "", ""); rec.Code != 403 {
		t.Errorf("the replaced session: %d", rec.Code)
	}
	if rec := w.req("GET", "/agent/v1/plan", r2.Session, "", ""); rec.Code != 200 {
		t.Errorf("the new session: %d %s", rec.Code, rec.Body)
	}
	m, _ := w.st.Machine("ms1-c1n1")
	if m.LastHello == nil || m.LastHello.IP.String() != "192.0.2.1" {
		t.Errorf("hello recorded from %+v, want the connection's address", m.LastHello)
	}
}
