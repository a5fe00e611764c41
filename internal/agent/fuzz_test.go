package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
)

// The agent's decoding of what the server answers, through the agent's own functions (the
// hello, the plan and the write it starts, the manifest, the result's reply) against a fake
// server that answers in-process: no socket, so nothing a reply names is ever dialled, and a
// synctest bubble's clock for the retries.
//
//	go test -run=NONE -fuzz='^FuzzPlan$' -fuzztime=60s ./internal/agent/

const fuzzServer = "http://imaged.test:8080/"

// fuzzImage is a small image and its manifest, as the fake server serves them.
func fuzzImage() (manifest []byte, digest string) {
	b := images.NewBuilder()
	b.Write(bytes.Repeat([]byte("imaged"), 1000))
	m, _ := b.Manifest()
	enc, _ := m.MarshalBinary()
	return enc, m.Digest.String()
}

// fuzzWorker is a worker whose requests fake answers; its sysfs has no disk, so a write stops
// before it fetches a block.
func fuzzWorker(t *testing.T, fake http.HandlerFunc) *worker {
	u, _ := url.Parse(fuzzServer)
	mac, _ := net.ParseMAC("52:54:00:99:00:11")
	cfg := &Config{Server: u, Token: "tok-secret", MAC: mac, SysBlock: t.TempDir(), DevDir: t.TempDir(), PlanPoll: time.Second}
	cfg.setDefaults()
	var con bytes.Buffer
	return &worker{cfg: cfg, client: strictClient(fake), session: "sess-secret", con: NewConsole(&con, Prefix), log: discardLog()}
}

// tokenWatch fails the test when the agent's session token goes anywhere but the server that
// issued it.
func tokenWatch(t *testing.T, next http.HandlerFunc) http.HandlerFunc {
	server, _ := url.Parse(fuzzServer)
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Authorization"), "sess-secret") && r.URL.Host != server.Host {
			t.Errorf("the session token was sent to %s", r.URL.Redacted())
		}
		next(w, r)
	}
}

// strictClient is inProcess with net/http's Transport's refusals: only http and https URLs with
// a host leave the agent.
func strictClient(h http.HandlerFunc) *http.Client {
	c := inProcess(h)
	next := c.Transport
	c.Transport = roundTrip(func(r *http.Request) (*http.Response, error) {
		if (r.URL.Scheme != "http" && r.URL.Scheme != "https") || r.URL.Host == "" {
			return nil, fmt.Errorf("unsupported protocol scheme %q or no host in %q", r.URL.Scheme, r.URL)
		}
		return next.RoundTrip(r)
	})
	return c
}

// FuzzPlan: whatever plan the server sends, the agent decodes it or says why not; a write plan
// runs up to choosing the disk (there is none), checking the manifest it names against the plan
// first; the result names the plan's digest and says what failed; the session token goes to the
// server only, whatever URLs the plan holds.
func FuzzPlan(f *testing.F) {
	manifest, digest := fuzzImage()
	mh := sha256.Sum256(manifest)
	hexd := strings.TrimPrefix(digest, "sha256:")
	good := fmt.Sprintf(`{"action":"write","image":{"ref":"debian@1","digest":%q,"size":6000,"manifest_hash":%q,"manifest_url":"%simages/%s/manifest","blob_url":"%simages/%s/blob"},"target":{"serial":"SYS1"}}`,
		digest, hex.EncodeToString(mh[:]), fuzzServer, hexd, fuzzServer, hexd)
	f.Add([]byte(good))
	f.Add([]byte(strings.Replace(good, `"serial":"SYS1"`, `"by_path":"pci-0000:00:04.0"`, 1)))
	f.Add([]byte(strings.Replace(good, `"size":6000`, `"size":-1`, 1)))
	f.Add([]byte(`{"action":"wait","target":{}}`))
	f.Add([]byte(`{"action":"write"}`))
	f.Add([]byte(`{"action":"write","image":{"manifest_url":"::"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, plan []byte) {
		synctest.Test(t, func(t *testing.T) { fuzzPlan(t, plan, manifest, hexd) })
	})
}

func fuzzPlan(t *testing.T, plan, manifest []byte, hexd string) {
	{
		served := func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/"+agentapi.PlanPath:
				w.Write(plan)
			case r.URL.Host == "imaged.test:8080" && r.URL.Path == "/images/"+hexd+"/manifest":
				w.Write(manifest)
			default:
				http.NotFound(w, r)
			}
		}
		w := fuzzWorker(t, tokenWatch(t, served))
		var p agentapi.Plan
		if err := w.call(t.Context(), "GET", agentapi.PlanPath, nil, &p); err != nil || p.Action != agentapi.ActionWrite || p.Image == nil {
			return // loop asks again or waits
		}
		res, disk, _ := w.write(t.Context(), &p)
		if disk != nil {
			disk.Close()
			t.Errorf("a write without a disk returned one")
		}
		if res.Digest != p.Image.Digest {
			t.Errorf("result for %q, the plan says %q", res.Digest, p.Image.Digest)
		}
		if res.Error == "" || res.Device != "" || res.BytesWritten != 0 {
			t.Errorf("a write without a disk: %+v", res)
		}
		if res.ManifestHash != "" && res.ManifestHash != p.Image.ManifestHash {
			if !strings.Contains(res.Error, "manifest hash") {
				t.Errorf("a manifest that is not the plan's went on: %q", res.Error)
			}
		}
	}
}

// FuzzManifestReply: any manifest body is a manifest whose hash is that of the bytes received,
// or an error; never a panic, whatever sizes it claims.
func FuzzManifestReply(f *testing.F) {
	manifest, _ := fuzzImage()
	f.Add(manifest)
	f.Add(manifest[:len(manifest)-1])
	f.Add([]byte("IMGMNFST"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := fuzzWorker(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
		m, sum, retry, err := w.fetchManifestOnce(t.Context(), fuzzServer+"images/x/manifest")
		if err != nil {
			if retry {
				t.Errorf("a decoding error is retried: %v", err)
			}
			return
		}
		h := sha256.Sum256(body)
		if sum != hex.EncodeToString(h[:]) || m.Size < 0 || int64(len(m.Blocks)) != (m.Size+images.BlockSize-1)/images.BlockSize {
			t.Errorf("manifest %d bytes, %d blocks, hash %s of %d bytes received", m.Size, len(m.Blocks), sum, len(body))
		}
	})
}

// FuzzReplies: whatever status, Retry-After and body the server answers a hello or a result
// with, the agent takes a 2xx as the answer (the body as received), gives up on a refusal at
// once, and otherwise retries within its deadline: it never panics and never hangs.
func FuzzReplies(f *testing.F) {
	for _, s := range []struct {
		result     bool
		status     uint16
		retryAfter string
		body       string
	}{
		{false, 200, "", `{"machine_id":"ms1-c1n1","action":"wait"}`},
		{false, 403, "", `{"error":"boot token not valid","field":"token"}`},
		{false, 503, "7", `{"error":"starting"}`},
		{false, 429, "99999999999", ``},
		{true, 200, "", `{"accepted":true,"action":"wait"}`},
		{true, 200, "", `{"accepted":"yes"}`},
		{true, 409, "", `{"error":"result refused: manifest mismatch"}`},
		{true, 502, "-1", "<html>bad gateway</html>"},
		{true, 204, "", ""},
	} {
		f.Add(s.result, s.status, s.retryAfter, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, result bool, status uint16, retryAfter string, body []byte) {
		code := int(status)
		if code < 200 || code > 599 {
			code = 200 + code%400
		}
		if strings.ContainsAny(retryAfter, "\r\n") {
			return // not a header value a server can send
		}
		synctest.Test(t, func(t *testing.T) {
			var mu sync.Mutex
			calls := 0
			fake := func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
				w.WriteHeader(code)
				w.Write(body)
			}
			w := fuzzWorker(t, fake)
			ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
			defer cancel()
			final := code/100 == 4 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
			if result {
				w.report(ctx, agentapi.Result{Digest: "sha256:" + strings.Repeat("0", 64), Error: "disk"}, nil, nil)
				mu.Lock()
				defer mu.Unlock()
				// A 2xx whose body is no ResultReply (a proxy's page) is not taken as delivered.
				var reply agentapi.ResultReply
				taken := code/100 == 2 && json.Unmarshal(body, &reply) == nil
				switch {
				case (taken || final) && calls != 1:
					t.Errorf("%d %q: the result was sent %d times, want once", code, body, calls)
				case calls > int(time.Hour/w.cfg.HelloBackoffMax)+10:
					t.Errorf("%d %q: the result was sent %d times in an hour: no backoff", code, body, calls)
				}
				return
			}
			start := time.Now()
			ans, err := sendHello(ctx, w.client, fuzzServer+HelloPath, helloBody, w.cfg, discardLog())
			switch {
			case code/100 == 2:
				if err != nil || ans.Status != code || !bytes.Equal(ans.Body, body[:min(len(body), maxResponse)]) {
					t.Errorf("%d: %+v %v", code, ans, err)
				}
			case final:
				if !errors.Is(err, ErrRefused) || calls != 1 {
					t.Errorf("%d: %v after %d calls, want ErrRefused at once", code, err, calls)
				}
				if msg := err.Error(); len(msg) > 1000 {
					t.Errorf("%d: a %d-byte error", code, len(msg))
				}
			default:
				if err == nil || time.Since(start) > w.cfg.HelloTimeout {
					t.Errorf("%d: %v after %v (timeout %v)", code, err, time.Since(start), w.cfg.HelloTimeout)
				}
			}
		})
	})
}
