package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
)

// catalogServer is an API over a real store and blob store holding one imported blob.
func catalogServer(t *testing.T) (http.Handler, *inventory.Inventory, images.Digest) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SyncMachines([]machines.Machine{{ID: "ms1-c1n1", MACs: []machines.MAC{machines.MustParseMAC("52:54:00:99:00:11")}}})
	inv, err := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("imaged"), images.BlockSize/3)
	d, _, err := blobs.Import(context.Background(), bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, blobs, nil), Blobs: blobs, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	return Authenticate(AuthConfig{AnonymousRead: true}, mux), inv, d
}

type call struct {
	method, path, body string
	who                *Principal
}

func (c call) do(h http.Handler) (int, Error, string) {
	r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if c.who != nil {
		r = r.WithContext(WithPrincipal(r.Context(), *c.who))
		r.Header.Set(OperatorHeader, "alice")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var e Error
	body, _ := io.ReadAll(w.Body)
	json.Unmarshal(body, &e)
	return w.Code, e, string(body)
}

func TestCatalogAPI(t *testing.T) {
	h, inv, d := catalogServer(t)
	admin := &Principal{Name: "uid 0 via the control socket", Scope: ScopeAdmin, Local: true}
	reader := &Principal{Name: "dashboard", Scope: ScopeRead}
	operator := &Principal{Name: "roller", Scope: ScopeOperate}
	reg := `{"name":"debian","version":"12.1","digest":"` + d.String() + `","source":"/tmp/x.raw","format":"raw"}`
	steps := []struct {
		name   string
		call   call
		status int
		field  string
		want   string // in the body
	}{
		{"a change without credentials", call{"POST", "/api/v1/images", reg, nil}, 401, "", "needs the admin scope"},
		{"a change with too small a scope", call{"POST", "/api/v1/images", reg, reader}, 403, "", "dashboard has the read scope"},
		{"an operator cannot register", call{"POST", "/api/v1/images", reg, operator}, 403, "", "needs admin"},
		{"register a blob that is not stored", call{"POST", "/api/v1/images", `{"name":"debian","version":"9","digest":"sha256:` + strings.Repeat("9", 64) + `"}`, admin}, 404, "digest", "imaged image import"},
		{"register the zero digest", call{"POST", "/api/v1/images", `{"name":"debian","version":"9","digest":"sha256:` + strings.Repeat("0", 64) + `"}`, admin}, 400, "digest", "names no image"},
		{"register with a bad name", call{"POST", "/api/v1/images", `{"name":"deb ian","version":"9","digest":"` + d.String() + `"}`, admin}, 400, "name", "NAME@VERSION"},
		{"register with a bad digest", call{"POST", "/api/v1/images", `{"name":"debian","version":"9","digest":"md5:00"}`, admin}, 400, "digest", ""},
		{"register with an unknown field", call{"POST", "/api/v1/images", `{"name":"debian","version":"9","digest":"` + d.String() + `","size":1}`, admin}, 400, "size", "unknown field"},
		{"register", call{"POST", "/api/v1/images", reg, admin}, 201, "", `"imported_by": "alice (uid 0 via the control socket)"`},
		{"register again: a no-op", call{"POST", "/api/v1/images", reg, admin}, 200, "", `"version": "12.1"`},
		{"list", call{"GET", "/api/v1/images", "", nil}, 200, "", `"debian"`},
		{"get by digest", call{"GET", "/api/v1/images/" + d.String(), "", nil}, 200, "", `"data_blocks": 2`},
		{"get by a bare hex digest", call{"GET", "/api/v1/images/" + d.Hex(), "", nil}, 200, "", `"version": "12.1"`},
		{"get a missing image", call{"GET", "/api/v1/images/debian@13", "", nil}, 404, "ref", "not found"},
		{"get a malformed ref", call{"GET", "/api/v1/images/debian", "", nil}, 400, "ref", "NAME@VERSION"},
		{"promote with a bad channel", call{"POST", "/api/v1/images/debian@12.1/promote", `{"channel":"a b"}`, operator}, 400, "channel", ""},
		{"promote a version onto a version name", call{"POST", "/api/v1/images/debian@12.1/promote", `{"channel":"12.1"}`, operator}, 409, "ref", "cannot also be a channel"},
		{"promote", call{"POST", "/api/v1/images/debian@12.1/promote", `{"channel":"production"}`, operator}, 200, "", `"by": "roller"`},
		{"rollback with no history", call{"POST", "/api/v1/images/debian@production/rollback", "", operator}, 409, "ref", "no earlier version"},
		{"assign a missing machine", call{"POST", "/api/v1/machines/nope/assign", `{"image":"debian@production"}`, operator}, 404, "id", ""},
		{"assign without an image", call{"POST", "/api/v1/machines/ms1-c1n1/assign", `{}`, operator}, 400, "image", "required"},
		{"assign a missing image", call{"POST", "/api/v1/machines/ms1-c1n1/assign", `{"image":"debian@14"}`, operator}, 404, "image", ""},
		{"assign", call{"POST", "/api/v1/machines/ms1-c1n1/assign", `{"image":"debian@production"}`, operator}, 200, "", `"assigned_image": "` + d.String()},
		{"delete what a channel and a machine use", call{"DELETE", "/api/v1/images/debian@12.1", "", admin}, 409, "ref", "in use"},
		{"prune keeping none", call{"POST", "/api/v1/images/prune", `{"keep":0}`, admin}, 400, "keep", ""},
		{"prune", call{"POST", "/api/v1/images/prune", `{"keep":1}`, admin}, 200, "", `"pruned": []`},
	}
	for _, s := range steps {
		status, e, body := s.call.do(h)
		if status != s.status || e.Field != s.field || !strings.Contains(body, s.want) {
			t.Errorf("%s: %d field %q, want %d field %q containing %q:\n%s", s.name, status, e.Field, s.status, s.field, s.want, body)
		}
	}
	if m, _ := inv.Machine("ms1-c1n1"); m.AssignedImage != d {
		t.Errorf("inventory did not see the assignment: %+v", m)
	}
}

// collectedBlobs is a blob store whose blob goes (collected as unregistered) between the
// register handler's manifest read and its catalog write.
type collectedBlobs struct{ *blobstore.Store }

func (collectedBlobs) Has(images.Digest) bool { return false }

// A registration that races the daemon's collection of unregistered blobs never leaves a catalog
// entry without its blob.
func TestRegisterRacesCollection(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	inv, err := inventory.New(st, inventory.Config{Log: slog.New(slog.DiscardHandler), TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := blobs.Import(context.Background(), bytes.NewReader([]byte("imaged")), nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	u, _ := url.Parse("http://10.99.0.1:8080")
	New(Deps{Inventory: inv, Catalog: catalog.New(st, collectedBlobs{blobs}, nil), Blobs: blobs, PublicURL: u, Log: slog.New(slog.DiscardHandler)}).Register(mux)
	admin := &Principal{Name: "root", Scope: ScopeAdmin, Local: true}
	status, e, body := call{"POST", "/api/v1/images", `{"name":"debian","version":"1","digest":"` + d.String() + `"}`, admin}.do(mux)
	if status != 404 || e.Field != "digest" || !strings.Contains(body, "import the image again") {
		t.Errorf("register: %d %s", status, body)
	}
	if imgs, err := st.Images(); err != nil || len(imgs) != 0 {
		t.Errorf("catalog after the refused registration: %v %v", imgs, err)
	}
}
