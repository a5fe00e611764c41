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
	cfg    *Config
	client *http.Client // for the agent API
	con    *console
	log    *slog.Logger
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
	// The boot token is a credential for this boot on the server that issued it: it never goes
	// to another origin, whatever URL a reply names (the image endpoints take no credential).
	if req.URL.Scheme == w.cfg.Server.Scheme && req.URL.Host == w.cfg.Server.Host {
		req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
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
		return &statusError{code: resp.StatusCode, body: snippet(data)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type statusError struct {
	code int
	body string
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
			res := w.write(ctx, &p)
			w.report(ctx, res)
			<-ctx.Done()
			return nil
		case !waiting:
			waiting = true
			w.con.say("no image assigned; waiting for work")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.cfg.PlanPoll):
		}
	}
}

// write carries out a plan and describes the outcome; it never panics and never reboots.
func (w *worker) write(ctx context.Context, p *agentapi.Plan) (res agentapi.Result) {
	img := p.Image
	res.Digest = img.Digest
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	fail := func(err error) agentapi.Result {
		res.Error = err.Error()
		var ce *blockcopy.ChecksumError
		if errors.As(err, &ce) {
			b := int(ce.Block)
			res.FailedBlock = &b
		}
		w.con.say("WRITE FAILED: %v", err)
		w.con.say("the disk must not be booted; this machine stays up for inspection")
		return res
	}
	w.con.say("plan: write %s (%s, %d bytes)", img.Ref, img.Digest, img.Size)
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
	defer f.Close()
	blobURL, err := url.Parse(img.BlobURL)
	if err != nil {
		return fail(fmt.Errorf("agent: blob URL %q: %w", img.BlobURL, err))
	}
	w.con.say("writing %s onto %s (%d bytes, serial %q)", img.Ref, path, disk.Size, disk.Serial)
	prog := w.startProgress(ctx, img.Digest, m.Size)
	r, err := blockcopy.Copy(ctx, f, &blockcopy.HTTPSource{URL: blobURL, ETag: `"` + img.Digest + `"`, Client: blockcopy.NewClient()}, m,
		// 8 retries per block, backing off to 10 s: a block survives about 35 s of the server
		// being away (imaged restarting) without restarting the copy; a corrupt block is tried
		// 3 more times only.
		blockcopy.Options{ReadBack: blockcopy.ReadBackSample, Progress: prog.update, Retries: 8, ChecksumRetries: 3})
	prog.stop()
	res.BytesFetched, res.BytesWritten = r.BytesFetched, r.BytesWritten
	res.BytesSkipped = r.BytesSkippedZero + r.BytesSkippedSame
	res.BlocksVerified = r.BlocksVerified + r.BlocksSame
	if err != nil {
		return fail(err)
	}
	w.con.say("wrote and verified %s on %s: %d bytes fetched, %d written, %d zero, %d blocks verified, %d read back, %.1f s (%.0f MB/s)",
		img.Ref, path, r.BytesFetched, r.BytesWritten, r.BytesZeroed+r.BytesSkippedZero, res.BlocksVerified, r.BlocksReadBack,
		r.Duration.Seconds(), float64(r.BytesWritten)/r.Duration.Seconds()/1e6)
	return res
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

// report sends the result until the server takes it (or refuses it for good).
func (w *worker) report(ctx context.Context, res agentapi.Result) {
	delay := w.cfg.HelloBackoff
	for {
		var reply agentapi.ResultReply
		err := w.call(ctx, "POST", agentapi.ResultPath, res, &reply)
		var se *statusError
		switch {
		case err == nil:
			if reply.Accepted {
				w.con.say("result accepted by the server: %s is verified on this machine; waiting", res.Digest)
			} else {
				w.con.say("result reported (failed write); waiting")
			}
			return
		case errors.As(err, &se) && se.code/100 == 4 && se.code != 408 && se.code != 429:
			w.con.say("RESULT REFUSED by the server: %v", err)
			return
		case ctx.Err() != nil:
			return
		}
		w.log.Warn("result not delivered; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, w.cfg.HelloBackoffMax)
	}
}
