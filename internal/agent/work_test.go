package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
)

// fakeServer is imaged's agent API and image endpoints for one image.
type fakeServer struct {
	mu       sync.Mutex
	blob     []byte
	manifest []byte
	digest   string
	results  []agentapi.Result
	progress int
	// manifestDown answers the manifest with 503 this many times (imaged restarting).
	manifestDown int
	// challenges issued; loseChallenge answers that many results with imaged's 409 "challenge"
	// (the daemon restarted and lost the challenge).
	challenges    []agentapi.Challenge
	loseChallenge int
	proofErr      []string // per result: why its proof did not check out ("" if it did)
	tamper        func()   // runs before each challenge is made
}

// checkProof does what imaged does with a proof: the HMAC of each challenged block of its copy
// of the image under the nonce.
func (f *fakeServer) checkProof(p *agentapi.Proof) string {
	if p == nil || len(f.challenges) == 0 {
		return "no proof"
	}
	c := f.challenges[len(f.challenges)-1]
	nonce, _ := hex.DecodeString(c.Nonce)
	if p.Nonce != c.Nonce || len(p.MACs) != len(c.Blocks) {
		return "another challenge"
	}
	for i, b := range c.Blocks {
		end := min(int64(len(f.blob)), (b+1)*images.BlockSize)
		if p.MACs[i] != hex.EncodeToString(agentapi.ProofMAC(nonce, f.digest, b, f.blob[b*images.BlockSize:end])) {
			return fmt.Sprintf("block %d", b)
		}
	}
	return ""
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hexd := strings.TrimPrefix(f.digest, "sha256:")
	if strings.HasPrefix(r.URL.Path, "/agent/") && (r.Header.Get("Authorization") != "Bearer sess" || r.Header.Get("X-Imaged-MAC") != "52:54:00:99:00:11") {
		http.Error(w, "bad token", http.StatusForbidden)
		return
	}
	switch r.URL.Path {
	case "/agent/v1/plan":
		mh := sha256.Sum256(f.manifest)
		fmt.Fprintf(w, `{"action":"write","image":{"ref":"debian@1","digest":%q,"size":%d,"manifest_hash":%q,"manifest_url":"http://%s/images/%s/manifest","blob_url":"http://%s/images/%s/blob"}}`,
			f.digest, len(f.blob), hex.EncodeToString(mh[:]), r.Host, hexd, r.Host, hexd)
	case "/images/" + hexd + "/manifest":
		f.mu.Lock()
		down := f.manifestDown > 0
		f.manifestDown--
		f.mu.Unlock()
		if down {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		w.Write(f.manifest)
	case "/images/" + hexd + "/blob":
		w.Header().Set("ETag", `"`+f.digest+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.blob))
	case "/agent/v1/progress":
		f.mu.Lock()
		f.progress++
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case "/agent/v1/challenge":
		if f.tamper != nil {
			f.tamper()
		}
		nonce := make([]byte, 32)
		rand.Read(nonce)
		// Block 20 is the image's last, shorter block; 5 to 8 are zero and never challenged.
		c := agentapi.Challenge{Digest: f.digest, Nonce: hex.EncodeToString(nonce), Blocks: []int64{0, 3, 12, 20}}
		f.mu.Lock()
		f.challenges = append(f.challenges, c)
		f.mu.Unlock()
		json.NewEncoder(w).Encode(c)
	case "/agent/v1/result":
		var res agentapi.Result
		json.NewDecoder(r.Body).Decode(&res)
		f.mu.Lock()
		defer f.mu.Unlock()
		if res.Error == "" && f.loseChallenge > 0 {
			f.loseChallenge--
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error": "no challenge is outstanding", "field": "challenge"}`)
			return
		}
		f.results = append(f.results, res)
		perr := ""
		if res.Error == "" {
			perr = f.checkProof(res.Proof)
		}
		f.proofErr = append(f.proofErr, perr)
		fmt.Fprintf(w, `{"accepted": %v, "action": "wait"}`, res.Error == "" && perr == "")
	default:
		http.NotFound(w, r)
	}
}

func runWorker(t *testing.T, srv *fakeServer, disk string) {
	t.Helper()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	u, _ := url.Parse(ts.URL)
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	dir := filepath.Dir(disk)
	block := fakeSys(t, map[string][3]string{"vda": {fmt.Sprint(64 << 11), "SYS", "0000:00:04.0"}})
	cfg := Config{Server: u, Token: "tok", MAC: mac, SysBlock: block, DevDir: dir}
	cfg.setDefaults()
	var console bytes.Buffer
	w := &worker{cfg: &cfg, client: http.DefaultClient, session: "sess", con: NewConsole(&console, Prefix), log: nil}
	w.log = discardLog()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.loop(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		srv.mu.Lock()
		n := len(srv.results)
		srv.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	t.Logf("console:\n%s", console.String())
}

func newImage(t *testing.T) (*fakeServer, []byte) {
	img := make([]byte, 20*images.BlockSize+4096)
	rand.Read(img)
	clear(img[5*images.BlockSize : 9*images.BlockSize])
	b := images.NewBuilder()
	b.Write(img)
	m, err := b.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := m.MarshalBinary()
	return &fakeServer{blob: append([]byte(nil), img...), manifest: enc, digest: m.Digest.String()}, img
}

func TestWorkerWritesAndReports(t *testing.T) {
	srv, img := newImage(t)
	disk := filepath.Join(t.TempDir(), "vda")
	garbage := make([]byte, 64<<20)
	rand.Read(garbage[:len(img)])
	os.WriteFile(disk, garbage, 0o644)
	runWorker(t, srv, disk)
	if len(srv.results) != 1 || srv.results[0].Error != "" {
		t.Fatalf("results: %+v", srv.results)
	}
	r := srv.results[0]
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got[:len(img)], img) {
		t.Fatal("the disk does not hold the image")
	}
	if r.Digest != srv.digest || r.Device != disk || r.BlocksVerified != 17 || r.BytesWritten != int64(len(img))-4*images.BlockSize {
		t.Errorf("result %+v", r)
	}
	// The counts add up to the image, as imaged requires.
	if r.BytesWritten+r.BytesZeroed+r.BytesSkipped != int64(len(img)) {
		t.Errorf("written %d + zeroed %d + skipped %d != %d", r.BytesWritten, r.BytesZeroed, r.BytesSkipped, len(img))
	}
	if len(srv.challenges) != 1 || srv.proofErr[0] != "" {
		t.Errorf("%d challenges; proof: %q", len(srv.challenges), srv.proofErr)
	}
}

// TestWorkerProvesFromTheDisk: the proof is read from the disk, not from what the agent fetched.
// The disk is changed under the agent between its write and the challenge (as if the write had
// not reached it), and the proof no longer checks out.
func TestWorkerProvesFromTheDisk(t *testing.T) {
	srv, _ := newImage(t)
	disk := filepath.Join(t.TempDir(), "vda")
	os.WriteFile(disk, make([]byte, 64<<20), 0o644)
	srv.loseChallenge = 1 // the first answer is "challenge gone": the agent asks for another
	srv.tamper = func() {
		f, _ := os.OpenFile(disk, os.O_WRONLY, 0)
		f.WriteAt([]byte("not the image"), 12*images.BlockSize+100)
		f.Close()
	}
	runWorker(t, srv, disk)
	if len(srv.results) != 1 || srv.results[0].Error != "" {
		t.Fatalf("results: %+v", srv.results)
	}
	if len(srv.challenges) != 2 {
		t.Errorf("%d challenges; want a second after the first was lost", len(srv.challenges))
	}
	if srv.proofErr[0] != "block 12" {
		t.Errorf("proof of a tampered disk: %q, want a mismatch in block 12", srv.proofErr[0])
	}
}

// A server that is away for a moment (imaged restarting) does not fail the write.
func TestWorkerWaitsOutTheServer(t *testing.T) {
	srv, img := newImage(t)
	srv.manifestDown = 2
	disk := filepath.Join(t.TempDir(), "vda")
	os.WriteFile(disk, make([]byte, 64<<20), 0o644)
	runWorker(t, srv, disk)
	if len(srv.results) != 1 || srv.results[0].Error != "" {
		t.Fatalf("results: %+v", srv.results)
	}
	if got, _ := os.ReadFile(disk); !bytes.Equal(got[:len(img)], img) {
		t.Fatal("the disk does not hold the image")
	}
}

func TestWorkerCorruptBlobLeavesBlockZero(t *testing.T) {
	srv, img := newImage(t)
	srv.blob[12*images.BlockSize+77] ^= 0xff
	disk := filepath.Join(t.TempDir(), "vda")
	before := make([]byte, 64<<20)
	rand.Read(before[:images.BlockSize])
	os.WriteFile(disk, before, 0o644)
	runWorker(t, srv, disk)
	if len(srv.results) != 1 {
		t.Fatalf("results: %+v", srv.results)
	}
	r := srv.results[0]
	if r.Error == "" || r.FailedBlock == nil || *r.FailedBlock != 12 || !strings.Contains(r.Error, "block 12") {
		t.Errorf("result %+v", r)
	}
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got[:images.BlockSize], before[:images.BlockSize]) {
		t.Error("block 0 was written although the copy failed")
	}
	if bytes.Equal(got[:len(img)], img) {
		t.Error("the disk holds the image despite the corrupt block")
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
