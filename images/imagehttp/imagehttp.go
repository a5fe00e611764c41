// Package imagehttp serves stored images over HTTP, for the agent and for other appliances:
//
//	GET|HEAD /images/{digest}/manifest   application/vnd.imaged.manifest.v1 (canonical bytes)
//	GET|HEAD /images/{digest}/blob       application/octet-stream (the raw image)
//
// Both are immutable, so both carry a strong ETag — the image digest for the blob, the manifest
// hash for the manifest — and Cache-Control immutable; Range and If-Range work (RFC 9110
// §14), so a client can resume or fetch blocks in parallel. Bodies go out through
// http.ServeContent from the *os.File, which the server copies with sendfile(2): nothing here
// wraps the ResponseWriter (that would hide its ReadFrom and turn sendfile into copies).
//
// It serves any image the store holds, whether a catalog entry names it or not: the routes are
// anonymous and content-addressed, agents ask only for what their plan names, and the daemon
// collects what no entry names (internal/catalog's Collector says more).
package imagehttp

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/imaged/imaged/images"
)

// ManifestType is the media type of a manifest in its canonical encoding.
const ManifestType = "application/vnd.imaged.manifest.v1"

// Store is what the handler needs of the blob store (*blobstore.Store). Missing images are
// errors matching fs.ErrNotExist.
type Store interface {
	Open(images.Digest) (*os.File, error)
	OpenManifest(images.Digest) (*os.File, images.Hash, error)
}

// Handler serves the images of s. Failures other than a missing image are logged to log (which
// may be nil) and answered with a generic 500, without the internal error text.
func Handler(s Store, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fail := func(w http.ResponseWriter, r *http.Request, d images.Digest, err error) {
		if errors.Is(err, fs.ErrNotExist) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "image not found", "digest": d.String()})
			return
		}
		log.Error("cannot open image", "digest", d.String(), "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "cannot read the image; see the server log", "digest": d.String()})
	}
	mux := http.NewServeMux()
	// A GET pattern matches HEAD too; ServeContent answers HEAD without a body.
	mux.HandleFunc("GET /images/{digest}/manifest", func(w http.ResponseWriter, r *http.Request) {
		d, ok := digest(w, r)
		if !ok {
			return
		}
		f, h, err := s.OpenManifest(d)
		if err != nil {
			fail(w, r, d, err)
			return
		}
		defer f.Close()
		serve(w, r, f, ManifestType, images.Digest(h).String())
	})
	mux.HandleFunc("GET /images/{digest}/blob", func(w http.ResponseWriter, r *http.Request) {
		d, ok := digest(w, r)
		if !ok {
			return
		}
		f, err := s.Open(d)
		if err != nil {
			fail(w, r, d, err)
			return
		}
		defer f.Close()
		serve(w, r, f, "application/octet-stream", d.String())
	})
	return mux
}

func serve(w http.ResponseWriter, r *http.Request, f *os.File, ctype, etag string) {
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("ETag", `"`+etag+`"`)
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	// No modification time: the ETag is the only validator, so If-Range works by ETag alone
	// (an HTTP-date If-Range then never matches and the whole body is sent, RFC 9110 §13.1.5).
	http.ServeContent(w, r, "", time.Time{}, f)
}

func digest(w http.ResponseWriter, r *http.Request) (images.Digest, bool) {
	d, err := images.ParseDigest(r.PathValue("digest"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed digest: want sha256:<64 hex digits>"})
		return d, false
	}
	return d, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
