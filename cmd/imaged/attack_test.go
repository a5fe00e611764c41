package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/agentapi"
	"github.com/imaged/imaged/internal/machines"
)

// fromAddr is an HTTP client whose connections come from a loopback address of its own, so that
// tests can speak as two hosts of the blade network.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func doJSON(t *testing.T, c *http.Client, method, url, bearer, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set(agentapi.HeaderMAC, "52:54:00:99:00:11")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestForgedWriteOverHTTP is issue 11's first finding, against the daemon: anyone who reaches
// the HTTP port fetched a machine's boot script, said hello with its token, read the plan and
// posted back its digest and manifest hash with any block count ("0 bytes written, 999999
// blocks verified on /dev/null"), and the machine was recorded as running the image. Now the
// forged result is refused, and so is one with the right counts and no proof; the hello's token
// is used up, and the hello's address is the connection's (a hello cannot name another
// machine's address).
func TestForgedWriteOverHTTP(t *testing.T) {
	base, d, stop := startDaemon(t)
	defer stop()
	blobs := d.blobs
	img := make([]byte, 3*images.BlockSize)
	for i := range img {
		img[i] = byte(i * 7)
	}
	dg, m, err := blobs.Import(context.Background(), strings.NewReader(string(img)), nil)
	if err != nil {
		t.Fatal(err)
	}
	mh, _ := m.Hash()
	if _, err := d.st.PutImage(images.Image{Name: "debian", Version: "12", Digest: dg, Size: int64(len(img)), ManifestHash: mh, DataBlocks: 3}); err != nil {
		t.Fatal(err)
	}
	if err := d.st.AssignImage("ms1-c1n1", dg, ""); err != nil {
		t.Fatal(err)
	}
	attacker := fromAddr("127.0.0.66")
	code, script := doJSON(t, attacker, "GET", base+"/boot/52:54:00:99:00:11.ipxe", "", "")
	tok := regexp.MustCompile(`imaged\.token=([0-9a-f]+)`).FindSubmatch(script)
	if code != 200 || tok == nil {
		t.Fatalf("script: %d %s", code, script)
	}
	// A hello that names another machine's address is refused outright.
	if code, body := doJSON(t, attacker, "POST", base+"/agent/v1/hello", "", fmt.Sprintf(`{"mac": "52:54:00:99:00:11", "token": %q, "ip": "10.99.0.12"}`, tok[1])); code != 400 || !strings.Contains(string(body), `"field": "ip"`) {
		t.Errorf("hello with an address in the body: %d %s", code, body)
	}
	code, body := doJSON(t, attacker, "POST", base+"/agent/v1/hello", "", fmt.Sprintf(`{"mac": "52:54:00:99:00:11", "token": %q}`, tok[1]))
	var hello agentapi.HelloReply
	if code != 200 || json.Unmarshal(body, &hello) != nil || hello.Session == "" {
		t.Fatalf("hello: %d %s", code, body)
	}
	if mach, _ := d.st.Machine("ms1-c1n1"); mach.LastHello == nil || mach.LastHello.IP.String() != "127.0.0.66" {
		t.Errorf("hello recorded as from %+v, not the connection's address", mach.LastHello)
	}
	// The token is used up: another host cannot say hello with it.
	if code, _ := doJSON(t, fromAddr("127.0.0.77"), "POST", base+"/agent/v1/hello", "", fmt.Sprintf(`{"mac": "52:54:00:99:00:11", "token": %q}`, tok[1])); code != 403 {
		t.Errorf("the used token from another host: %d", code)
	}
	code, body = doJSON(t, attacker, "GET", base+"/agent/v1/plan", hello.Session, "")
	var plan agentapi.Plan
	if code != 200 || json.Unmarshal(body, &plan) != nil || plan.Image == nil {
		t.Fatalf("plan: %d %s", code, body)
	}
	forged := fmt.Sprintf(`{"digest": %q, "manifest_hash": %q, "device": "/dev/null", "bytes_written": 0, "blocks_verified": 999999}`, plan.Image.Digest, plan.Image.ManifestHash)
	if code, body := doJSON(t, attacker, "POST", base+"/agent/v1/result", hello.Session, forged); code != 409 {
		t.Errorf("forged result: %d %s", code, body)
	}
	counts := fmt.Sprintf(`{"digest": %q, "manifest_hash": %q, "device": "/dev/null", "bytes_written": %d, "blocks_verified": 3}`, plan.Image.Digest, plan.Image.ManifestHash, len(img))
	if code, body := doJSON(t, attacker, "POST", base+"/agent/v1/result", hello.Session, counts); code != 409 || !strings.Contains(string(body), "proof") {
		t.Errorf("result without a proof: %d %s", code, body)
	}
	if mach, _ := d.st.Machine("ms1-c1n1"); !mach.CurrentImage.IsZero() {
		t.Fatalf("the machine is recorded as running %s", mach.CurrentImage)
	}
	_, metrics := httpDo(t, "GET", base+"/metrics", "")
	if !strings.Contains(metrics, `imaged_agent_results_total{outcome="refused"} 2`) {
		t.Errorf("/metrics does not count the refusals")
	}
}

// TestAnonymousScriptsWriteNothing is issue 11's seventh finding, against the daemon: 4000 boot
// script fetches, with no job waiting, leave the state file as it was and the machine's audit
// log intact.
func TestAnonymousScriptsWriteNothing(t *testing.T) {
	base, d, stop := startDaemon(t)
	defer stop()
	d.inv.Event(machines.Event{Machine: "ms1-c1n1", Kind: "assign", Message: "assigned debian@12 by roller"})
	db := filepath.Join(d.cfg.StateDir, "imaged.db")
	before, _ := os.Stat(db)
	c := fromAddr("127.0.0.66")
	for range 4000 {
		if code, _ := doJSON(t, c, "GET", base+"/boot/52:54:00:99:00:11.ipxe", "", ""); code != 200 {
			t.Fatalf("script: %d", code)
		}
	}
	after, _ := os.Stat(db)
	if after.Size() != before.Size() {
		t.Errorf("4000 anonymous script fetches grew the state file from %d to %d bytes", before.Size(), after.Size())
	}
	ev, _ := d.st.Events("ms1-c1n1", 0)
	if len(ev) != 1 || ev[0].Kind != "assign" {
		t.Errorf("stored events: %+v", ev)
	}
	var timeline []machines.Event
	_, body := httpDo(t, "GET", base+"/api/v1/machines/ms1-c1n1/events", "")
	json.Unmarshal([]byte(body), &timeline)
	if len(timeline) != 2 || timeline[1].Kind != "script" || timeline[1].Count != 4000 {
		t.Errorf("timeline: %s", body)
	}
}
