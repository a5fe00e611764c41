package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/blockcopy"
)

// worker carries out plans for one booted machine.
type worker struct {
	cfg     *Config
	client  *http.Client // for the agent API
	session string       // the hello's session token: the bearer of every later request
	con     *Console
	log     *slog.Logger
}

func (w *worker) request(ctx context.Context, method, u string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	// The session is a credential for this boot on the server that issued it: it never goes
	// to another origin, whatever URL a reply names (the image endpoints take no credential).
	if req.URL.Scheme == w.cfg.Server.Scheme && req.URL.Host == w.cfg.Server.Host {
		req.Header.Set("Authorization", "Bearer "+w.session)
		req.Header.Set(agentapi.HeaderMAC, w.cfg.MAC.String())
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// call makes one request to the agent API and decodes a JSON reply into out (if not nil).
func (w *worker) call(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.HelloAttempt)
	defer cancel()
	req, err := w.request(ctx, method, w.cfg.Server.JoinPath(path).String(), body)
	if err != nil {
		return err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Field string `json:"field"`
		}
		_ = json.Unmarshal(data, &e)
		return &statusError{code: resp.StatusCode, body: snippet(data), field: e.Field}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type statusError struct {
	code  int
	body  string
	field string // the JSON error's field, if it names one
}

func (e *statusError) Error() string { return fmt.Sprintf("server answered %d: %s", e.code, e.body) }

// loop asks for a plan until there is one, carries it out, reports the result and stays up
// until ctx ends. It never reboots: after a failed write the disk must not be booted, and a
// person or the job that follows decides what happens next.
func (w *worker) loop(ctx context.Context) error {
	waiting := false
	for {
		var p agentapi.Plan
		err := w.call(ctx, "GET", agentapi.PlanPath, nil, &p)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			w.log.Warn("cannot get a plan; asking again", "err", err)
		case p.Action == agentapi.ActionWrite && p.Image != nil:
			res, disk, m := w.write(ctx, &p)
			w.report(ctx, res, disk, m)
			if disk != nil {
				disk.Close()
			}
			<-ctx.Done()
			return nil
		case !waiting:
			waiting = true
			w.con.Say("no image assigned; waiting for work")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.cfg.PlanPoll):
		}
	}
}

// write carries out a plan and describes the outcome; it never panics and never reboots. After
// a successful write it returns the disk, still open, and the manifest, for the proof of
// possession that goes with the result.
func (w *worker) write(ctx context.Context, p *agentapi.Plan) (res agentapi.Result, dev *os.File, _ *images.Manifest) {
	img := p.Image
	res.Digest = img.Digest
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	fail := func(err error) (agentapi.Result, *os.File, *images.Manifest) {
		res.Error = err.Error()
		var ce *blockcopy.ChecksumError
		if errors.As(err, &ce) {
			b := int(ce.Block)
			res.FailedBlock = &b
		}
		w.con.Say("WRITE FAILED: %v", err)
		w.con.Say("the disk must not be booted; this machine stays up for inspection")
		if dev != nil {
			dev.Close()
		}
		return res, nil, nil
	}
	w.con.Say("plan: write %s (%s, %d bytes)", img.Ref, img.Digest, img.Size)
	m, mh, err := w.fetchManifest(ctx, img.ManifestURL)
	if err != nil {
		return fail(err)
	}
	res.ManifestHash = mh
	switch {
	case mh != img.ManifestHash:
		return fail(fmt.Errorf("agent: manifest hash %s, the plan says %s", mh, img.ManifestHash))
	case m.Digest.String() != img.Digest || m.Size != img.Size:
		return fail(fmt.Errorf("agent: manifest describes %s (%d bytes), the plan says %s (%d bytes)", m.Digest, m.Size, img.Digest, img.Size))
	}
	disks, err := ListDisks(w.cfg.SysBlock)
	if err != nil {
		return fail(err)
	}
	disk, err := PickDisk(disks, p.Target.Serial, p.Target.ByPath, m.Size)
	if err != nil {
		return fail(err)
	}
	path := filepath.Join(w.cfg.DevDir, disk.Name)
	res.Device = path
	f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return fail(fmt.Errorf("agent: open %s: %w", path, err))
	}
	dev = f
	blobURL, err := url.Parse(img.BlobURL)
	if err != nil {
		return fail(fmt.Errorf("agent: blob URL %q: %w", img.BlobURL, err))
	}
	w.con.Say("writing %s onto %s (%d bytes, serial %q)", img.Ref, path, disk.Size, disk.Serial)
	prog := w.startProgress(ctx, img.Digest, m.Size)
	r, err := blockcopy.Copy(ctx, f, &blockcopy.HTTPSource{URL: blobURL, ETag: `"` + img.Digest + `"`, Client: w.cfg.BlobClient()}, m,
		// 8 retries per block, backing off to 10 s: a block survives about 35 s of the server
		// being away (imaged restarting) without restarting the copy; a corrupt block is tried
		// 3 more times only.
		blockcopy.Options{ReadBack: blockcopy.ReadBackSample, Progress: prog.update, Retries: 8, ChecksumRetries: 3})
	prog.stop()
	res.BytesFetched, res.BytesWritten, res.BytesZeroed = r.BytesFetched, r.BytesWritten, r.BytesZeroed
	res.BytesSkipped = r.BytesSkippedZero + r.BytesSkippedSame
	res.BlocksVerified = r.BlocksVerified + r.BlocksSame
	if err != nil {
		return fail(err)
	}
	w.con.Say("wrote and verified %s on %s: %d bytes fetched, %d written, %d zero, %d blocks verified, %d read back, %.1f s (%.0f MB/s)",
		img.Ref, path, r.BytesFetched, r.BytesWritten, r.BytesZeroed+r.BytesSkippedZero, res.BlocksVerified, r.BlocksReadBack,
		r.Duration.Seconds(), float64(r.BytesWritten)/r.Duration.Seconds()/1e6)
	return res, f, m
}

// manifestPatience is how long the agent keeps trying to fetch a manifest while the server is
// unreachable or failing (a restart of imaged takes seconds; a reimage must survive it).
const manifestPatience = 5 * time.Minute

// fetchManifest downloads a manifest and returns it with its hash (hex). Transport errors, 5xx,
// 408 and 429 are tried again with backoff for manifestPatience; another answer is final.
func (w *worker) fetchManifest(ctx context.Context, u string) (*images.Manifest, string, error) {
	ctx, cancel := context.WithTimeout(ctx, manifestPatience)
	defer cancel()
	delay := w.cfg.HelloBackoff
	for {
		m, sum, retry, err := w.fetchManifestOnce(ctx, u)
		if err == nil || !retry || ctx.Err() != nil {
			return m, sum, err
		}
		w.log.Warn("manifest not fetched; retrying", "err", err, "wait", delay)
		select {
		case <-ctx.Done():
			return nil, "", err
		case <-time.After(delay):
		}
		delay = min(2*delay, w.cfg.HelloBackoffMax)
	}
}

func (w *worker) fetchManifestOnce(ctx context.Context, u string) (_ *images.Manifest, _ string, retry bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := w.request(ctx, "GET", u, nil)
	if err != nil {
		return nil, "", false, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, "", true, fmt.Errorf("agent: manifest: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		retry := resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests
		return nil, "", retry, fmt.Errorf("agent: manifest %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, "", true, fmt.Errorf("agent: manifest: %w", err)
	}
	var m images.Manifest
	if err := m.UnmarshalBinary(data); err != nil {
		return nil, "", false, err
	}
	sum := sha256.Sum256(data)
	return &m, hex.EncodeToString(sum[:]), false, nil
}

// progress sends the copy's running totals to the server once a second.
type progress struct {
	mu     sync.Mutex
	last   blockcopy.Result
	stopCh chan struct{}
	done   chan struct{}
}

func (w *worker) startProgress(ctx context.Context, digest string, total int64) *progress {
	p := &progress{stopCh: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(p.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stopCh:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p.mu.Lock()
			r := p.last
			p.mu.Unlock()
			done := r.BytesWritten + r.BytesZeroed + r.BytesSkippedZero + r.BytesSkippedSame
			el := time.Since(start).Seconds()
			rep := agentapi.Progress{Digest: digest, BytesDone: min(done, total), BytesTotal: total, RateBytes: float64(done) / el,
				BytesFetched: r.BytesFetched, BytesWritten: r.BytesWritten}
			if rep.RateBytes > 0 {
				rep.ETASeconds = float64(total-rep.BytesDone) / rep.RateBytes
			}
			if err := w.call(ctx, "POST", agentapi.ProgressPath, rep, nil); err != nil {
				w.log.Debug("progress not sent", "err", err)
			}
		}
	}()
	return p
}

func (p *progress) update(r blockcopy.Result) {
	p.mu.Lock()
	p.last = r
	p.mu.Unlock()
}

func (p *progress) stop() {
	close(p.stopCh)
	<-p.done
}

// proofAttempts bounds how often the agent asks for a new challenge when the server no longer
// has the one it answered (the server restarted, or the challenge expired).
const proofAttempts = 5

// report sends the result until the server takes it (or refuses it for good). A successful write
// goes with a proof of possession: a challenge from the server, answered from the disk.
func (w *worker) report(ctx context.Context, res agentapi.Result, disk *os.File, m *images.Manifest) {
	delay := w.cfg.HelloBackoff
	proofs := 0
	for {
		var err error
		if res.Error == "" && res.Proof == nil {
			res.Proof, err = w.prove(ctx, disk, m, res.Digest)
		}
		var reply agentapi.ResultReply
		if err == nil {
			err = w.call(ctx, "POST", agentapi.ResultPath, res, &reply)
		}
		var se *statusError
		switch {
		case err == nil:
			if reply.Accepted {
				w.con.Say("result accepted by the server: %s is verified on this machine; waiting", res.Digest)
			} else {
				w.con.Say("result reported (failed write); waiting")
			}
			return
		case errors.As(err, &se) && se.code == http.StatusConflict && se.field == "challenge" && proofs < proofAttempts:
			// The server lost the challenge this proof answers: answer a new one.
			proofs++
			res.Proof = nil
			w.log.Warn("challenge no longer outstanding; asking for a new one", "err", err)
			continue
		case errors.As(err, &se) && se.code/100 == 4 && se.code != 408 && se.code != 429:
			w.con.Say("RESULT REFUSED by the server: %v", err)
			return
		case ctx.Err() != nil:
			return
		}
		// The same proof again: if the server took the result but its reply was lost, it
		// recognises the proof and answers the same; if it never saw it, the challenge is
		// still outstanding.
		w.log.Warn("result not delivered; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, w.cfg.HelloBackoffMax)
	}
}

// prove asks the server for a challenge and answers it from the disk: each challenged block is
// read back from the device (its cached pages dropped first) and MACed under the nonce.
func (w *worker) prove(ctx context.Context, disk *os.File, m *images.Manifest, digest string) (*agentapi.Proof, error) {
	var c agentapi.Challenge
	if err := w.call(ctx, "GET", agentapi.ChallengePath, nil, &c); err != nil {
		return nil, fmt.Errorf("agent: challenge: %w", err)
	}
	nonce, err := hex.DecodeString(c.Nonce)
	if err != nil || len(nonce) < 16 {
		return nil, fmt.Errorf("agent: the challenge's nonce %q is not hex of 16 bytes or more", c.Nonce)
	}
	if c.Digest != digest {
		return nil, fmt.Errorf("agent: the challenge is for %s, this disk was written with %s", c.Digest, digest)
	}
	blockcopy.DropCache(disk)
	p := &agentapi.Proof{Nonce: c.Nonce, MACs: make([]string, len(c.Blocks))}
	buf := make([]byte, images.BlockSize)
	for i, b := range c.Blocks {
		if b < 0 || b >= int64(len(m.Blocks)) {
			return nil, fmt.Errorf("agent: the challenge names block %d; the image has %d", b, len(m.Blocks))
		}
		n := m.Len(int(b))
		if _, err := disk.ReadAt(buf[:n], m.Offset(int(b))); err != nil {
			return nil, fmt.Errorf("agent: read block %d back from the disk: %w", b, err)
		}
		p.MACs[i] = hex.EncodeToString(agentapi.ProofMAC(nonce, digest, b, buf[:n]))
	}
	w.con.Say("proof of possession: %d blocks read back from the disk for the server's challenge", len(c.Blocks))
	return p, nil
}
