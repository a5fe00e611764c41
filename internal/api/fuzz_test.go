package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/store"
)

// fuzzRoutes are the operator API's requests that take a body, a path parameter or a query:
// %s is where the fuzzed parameter goes (path-escaped, or query-escaped after a '?').
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/api/v1/machines/%s/reimage"},
	{"POST", "/api/v1/machines/%s/reboot"},
	{"POST", "/api/v1/machines/%s/power"},
	{"POST", "/api/v1/machines/%s/boot"},
	{"POST", "/api/v1/machines/%s/assign"},
	{"POST", "/api/v1/images"},
	{"POST", "/api/v1/images/%s/promote"},
	{"POST", "/api/v1/images/%s/rollback"},
	{"DELETE", "/api/v1/images/%s"},
	{"POST", "/api/v1/images/prune"},
	{"POST", "/api/v1/jobs/%s/cancel"},
	{"POST", "/api/v1/workers/ms1-c1n1/group/linux-build/jobs?task_name=%s"},
	{"POST", "/api/v1/check-in"},
}

// fuzzWorld is an API over a fresh real store, inventory and job manager (not running: jobs stay
// queued), the blob store of fuzzBlobs (its one blob registered as debian@1, which
// debian@production points at), and a BMC that always succeeds. bare leaves out the jobs, the
// BMCs and the blob store, whose routes must then answer 503.
func fuzzWorld(t *testing.T, blobs keptBlobs, bare bool) http.Handler {
	dir, err := os.MkdirTemp("/dev/shm", "imaged-api-fuzz-")
	if err != nil {
		dir = t.TempDir()
	} else {
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	st, err := store.Open(filepath.Join(dir, "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SyncMachines([]machines.Machine{
		{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}, IP: netip.MustParseAddr("192.0.2.1"), WorkerGroup: "linux-build"},
		{ID: "ms1-c1n2", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:12")}},
	})
	log := slog.New(slog.DiscardHandler)
	inv, err := inventory.New(st, inventory.Config{Log: log, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d := images.Digest(sha256.Sum256(fuzzBlob))
	m, err := blobs.Manifest(d)
	if err != nil {
		t.Fatal(err)
	}
	mh, _ := m.Hash()
	blocks, data := m.NonZero()
	st.PutImage(images.Image{Name: "debian", Version: "1", Digest: d, Size: m.Size, DataBytes: data, DataBlocks: blocks, ManifestHash: mh})
	st.Promote("debian", "1", "production", "fuzz")
	deps := Deps{Inventory: inv, Catalog: catalog.New(st, nil, nil), ReimageStale: true, Log: log}
	deps.PublicURL, _ = url.Parse("http://10.99.0.1:8080")
	if !bare {
		mgr, err := jobs.New(jobs.Config{}, jobs.Deps{Power: idlePower{}, Catalog: fuzzCatalog{inv}, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := net.ParseMAC("52:54:00:99:00:11")
		deps.Jobs, deps.Blobs, deps.Catalog = mgr, blobs, catalog.New(st, blobs, nil)
		deps.BMCs = &fakeBMCs{sys: power.System{ID: "C1N1", Power: power.On, Health: "OK", MACs: []net.HardwareAddr{mac}}}
	}
	mux := http.NewServeMux()
	New(deps).Register(mux)
	return Authenticate(AuthConfig{}, mux)
}

// fuzzBlob is the one image of fuzzWorld.
var fuzzBlob = bytes.Repeat([]byte("imaged"), 700)

// fuzzBlobs imports fuzzBlob into a blob store that every run shares (an import costs more than
// the rest of the world); deleting a blob from it is a no-op that succeeds.
func fuzzBlobs(f *testing.F) keptBlobs {
	blobs, err := blobstore.Open(filepath.Join(f.TempDir(), "images"))
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := blobs.Import(context.Background(), bytes.NewReader(fuzzBlob), nil); err != nil {
		f.Fatal(err)
	}
	return keptBlobs{blobs}
}

type keptBlobs struct{ *blobstore.Store }

func (keptBlobs) Delete(images.Digest) error { return nil }

// idlePower is never called: the job manager is not running.
type idlePower struct{}

func (idlePower) PowerState(context.Context, string) (power.State, error)          { return power.Off, nil }
func (idlePower) Power(context.Context, string, power.Action) error                { return nil }
func (idlePower) BootOnce(context.Context, string, power.BootTarget, string) error { return nil }

// fuzzCatalog is the inventory as the job manager sees it (as cmd/imaged adapts it).
type fuzzCatalog struct{ inv *inventory.Inventory }

func (c fuzzCatalog) Machine(id string) (machines.Machine, bool) { return c.inv.Machine(id) }
func (c fuzzCatalog) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	return c.inv.Assign(id, img, by)
}
func (c fuzzCatalog) ClearCurrentImage(id string) error { return c.inv.ClearCurrentImage(id) }

// FuzzOperatorBodies drives the real handlers of every operator request with a body, a path
// parameter or a query, as an admin, with arbitrary bodies and parameters: no panic, no 5xx but a
// 503 for a dependency this imaged lacks, every refusal a JSON error that says what is wrong,
// every success JSON.
//
//	go test -run=NONE -fuzz='^FuzzOperatorBodies$' -fuzztime=60s ./internal/api/
func FuzzOperatorBodies(f *testing.F) {
	d := images.Digest(sha256.Sum256(fuzzBlob))
	blobs := fuzzBlobs(f)
	seeds := []struct {
		route       int
		param, body string
	}{
		{0, "ms1-c1n1", `{"image":"debian@production"}`},
		{0, "ms1-c1n1", `{"image":"debian@1","probe":{"kind":"http","port":8080,"path":"/ready","status":204,"check_in":true}}`},
		{0, "ms1-c1n1", `{"image":"` + d.String() + `","probe":{"kind":"tcp","port":22}}`},
		{0, "ms1-c1n2", `{"image":"debian@production"}`},
		{1, "ms1-c1n1", ``},
		{1, "ms1-c1n1", `{"probe":{"kind":"tcp","port":22}}`},
		{2, "ms1-c1n1", `{"action":"graceful-restart"}`},
		{3, "ms1-c1n1", `{"target":"uefi-http","uri":"http://10.99.0.1:8080/boot/ipxe.efi"}`},
		{3, "ms1-c1n1", `{"target":"pxe"}`},
		{4, "ms1-c1n1", `{"image":"debian@production"}`},
		{5, "", `{"name":"debian","version":"2","digest":"` + d.String() + `","source":"https://u:p@example.com/x.raw?X-Amz-Signature=s","format":"raw"}`},
		{6, "debian@1", `{"channel":"canary"}`},
		{7, "debian@production", ``},
		{8, "debian@1", ``},
		{9, "", `{"keep":1}`},
		{10, "0000000000000", ``},
		{11, "reimage", ``},
		{12, "", `{"digest":"` + d.String() + `"}`},
		{12, "", `{"digest":"sha256:zz"}`},
	}
	for _, s := range seeds {
		for _, bare := range []bool{false, true} {
			f.Add(uint8(s.route), s.param, s.body, bare)
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, param, body string, bare bool) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := rt.path
		if strings.Contains(path, "%s") {
			if param == "" || param == "." || param == ".." {
				return // not a handler's input: the mux redirects to the cleaned path
			}
			esc := url.PathEscape(param)
			if strings.Contains(path, "?") {
				esc = url.QueryEscape(param)
			}
			path = fmt.Sprintf(path, esc)
		}
		h := fuzzWorld(t, blobs, bare)
		r := httptest.NewRequest(rt.method, path, strings.NewReader(body))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		r.RemoteAddr = "192.0.2.1:4000" // ms1-c1n1's address, for the check-in
		r = r.WithContext(WithPrincipal(r.Context(), Principal{Name: "fuzz", Scope: ScopeAdmin}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		res, _ := io.ReadAll(w.Body)
		what := fmt.Sprintf("%s %s %q (bare %v) → %d %s", rt.method, path, body, bare, w.Code, res)
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%s: Content-Type %q", what, w.Header().Get("Content-Type"))
		}
		switch {
		case w.Code == http.StatusServiceUnavailable && bare:
		case w.Code >= 500:
			t.Fatalf("%s: a server error", what)
		case w.Code >= 400:
			var e Error
			if err := json.Unmarshal(res, &e); err != nil || e.Error == "" {
				t.Fatalf("%s: not a JSON error with a message (%v)", what, err)
			}
		default:
			if !json.Valid(res) {
				t.Fatalf("%s: not JSON", what)
			}
		}
	})
}
