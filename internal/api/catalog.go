package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

// The image catalog over HTTP: what `imaged image …` and `imaged machines assign` use while the
// daemon holds the state file. Reading needs the read scope, changes operate or admin.

// ImageCatalog is the image catalog the catalog endpoints serve and change, and the jobs' images
// come from; *store.Store implements it. The catalog's rules fail with the errors of package
// images, and what does not exist matches fs.ErrNotExist.
type ImageCatalog interface {
	Images() ([]images.Image, error)
	Channels() ([]images.Channel, error)
	ResolveImage(ref images.Ref) (images.Image, error)
	PutImage(img images.Image) (created bool, err error)
	DeleteImage(name, version string) (img images.Image, blobFree bool, err error)
	Promote(name, version, channel, by string) (images.Channel, error)
	Rollback(name, channel, by string) (images.Channel, error)
	Prune(keep int) (removed []images.Pruned, kept map[string][]string, err error)
}

// Blobs is the part of the blob store the catalog endpoints use.
type Blobs interface {
	Manifest(d images.Digest) (*images.Manifest, error)
	Open(d images.Digest) (*os.File, error) // the blob, to check an agent's proof of possession
	Has(d images.Digest) bool
	Delete(d images.Digest) error
}

// Catalog is the body of GET /api/v1/images.
type Catalog struct {
	Images   []images.Image   `json:"images"`
	Channels []images.Channel `json:"channels"`
}

// ImageInfo is one image and the channels of its name.
type ImageInfo struct {
	Image    images.Image     `json:"image"`
	Channels []images.Channel `json:"channels"`
}

// RegisterRequest registers a blob already in the blob store as NAME@VERSION. The server reads
// the blob's manifest itself; sizes and hashes are never taken from the request. The source is
// kept without its credentials (images.Image.Source).
type RegisterRequest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Source  string `json:"source,omitempty"`
	Format  string `json:"format,omitempty"`
}

// PromoteRequest moves a channel to the image of the URL.
type PromoteRequest struct {
	Channel string `json:"channel"`
}

// DeleteReply says what DELETE /api/v1/images/{ref} removed.
type DeleteReply struct {
	Image       images.Image `json:"image"`
	BlobRemoved bool         `json:"blob_removed"`
}

// PruneRequest keeps the newest Keep versions of every name (and whatever is in use).
type PruneRequest struct {
	Keep int `json:"keep"`
}

// PruneReply lists what prune removed and what it kept because something points at it.
type PruneReply struct {
	Pruned []images.Image      `json:"pruned"`
	Kept   map[string][]string `json:"kept"`
}

// AssignRequest names the image a machine is to run.
type AssignRequest struct {
	Image string `json:"image"` // name@version, name@channel or sha256:<hex>
}

// AssignReply is the machine after the assignment and the image it now points at.
type AssignReply struct {
	Machine machines.Machine `json:"machine"`
	Image   images.Image     `json:"image"`
}

func (s *Server) registerCatalog(mux *http.ServeMux) {
	s.route(mux, "GET /api/v1/images", ScopeRead, s.listImages)
	s.route(mux, "GET /api/v1/images/{ref}", ScopeRead, s.getImage)
	s.route(mux, "POST /api/v1/images", ScopeAdmin, s.registerImage)
	s.route(mux, "POST /api/v1/images/{ref}/promote", ScopeOperate, s.promote)
	s.route(mux, "POST /api/v1/images/{ref}/rollback", ScopeOperate, s.rollback)
	s.route(mux, "DELETE /api/v1/images/{ref}", ScopeAdmin, s.deleteImage)
	s.route(mux, "POST /api/v1/images/prune", ScopeAdmin, s.prune)
	s.route(mux, "POST /api/v1/machines/{id}/assign", ScopeOperate, s.assign)
}

// storeError answers a store error with its status: 404 for what does not exist, 409 for a
// change the catalog's rules refuse, 400 for a malformed reference, else 500.
func (s *Server) storeError(w http.ResponseWriter, field string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fail(w, http.StatusNotFound, field, "%v", err)
	case errors.Is(err, images.ErrImmutable), errors.Is(err, images.ErrInUse), errors.Is(err, images.ErrNoHistory), errors.Is(err, images.ErrConflict):
		fail(w, http.StatusConflict, field, "%v", err)
	case errors.Is(err, images.ErrBadRef):
		fail(w, http.StatusBadRequest, field, "%v", err)
	default:
		s.log.Error("catalog", "err", err)
		fail(w, http.StatusInternalServerError, "", "the catalog could not be changed or read; see imaged's log")
	}
}

// noBlobs answers 503 when this server has no blob store.
func (s *Server) noBlobs(w http.ResponseWriter) bool {
	if s.blobs == nil {
		fail(w, http.StatusServiceUnavailable, "", "this imaged has no blob store")
		return true
	}
	return false
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.catalog.Images()
	if err != nil {
		s.storeError(w, "", err)
		return
	}
	chs, err := s.catalog.Channels()
	if err != nil {
		s.storeError(w, "", err)
		return
	}
	writeJSON(w, http.StatusOK, Catalog{Images: nonNil(imgs), Channels: nonNil(chs)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// resolve finds the image text names (name@version, name@channel, or a digest: sha256:<hex> or
// the hex alone); field names where it came from in the request, for the error.
func (s *Server) resolve(w http.ResponseWriter, field, text string) (images.Image, bool) {
	ref, err := images.ParseRefOrDigest(text)
	if err != nil {
		fail(w, http.StatusBadRequest, field, "%v", err)
		return images.Image{}, false
	}
	return s.resolveRef(w, field, ref)
}

// resolveRef finds the catalog's image of ref; field names where ref came from.
func (s *Server) resolveRef(w http.ResponseWriter, field string, ref images.Ref) (images.Image, bool) {
	img, err := s.catalog.ResolveImage(ref)
	if err != nil {
		s.storeError(w, field, err)
		return images.Image{}, false
	}
	return img, true
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	img, ok := s.resolve(w, "ref", r.PathValue("ref"))
	if !ok {
		return
	}
	chs, err := s.catalog.Channels()
	if err != nil {
		s.storeError(w, "", err)
		return
	}
	mine := []images.Channel{}
	for _, ch := range chs {
		if ch.Name == img.Name {
			mine = append(mine, ch)
		}
	}
	writeJSON(w, http.StatusOK, ImageInfo{Image: img, Channels: mine})
}

func (s *Server) registerImage(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w) {
		return
	}
	var req RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	if _, err := images.ParseRef(req.Name + "@" + req.Version); err != nil {
		fail(w, http.StatusBadRequest, "name", "name and version: %v", err)
		return
	}
	d, err := images.ParseDigest(req.Digest)
	if err != nil {
		fail(w, http.StatusBadRequest, "digest", "%v", err)
		return
	}
	m, err := s.blobs.Manifest(d)
	if err != nil {
		fail(w, http.StatusNotFound, "digest", "blob %s is not in the blob store (%v): import the image with `imaged image import`", d, err)
		return
	}
	mh, err := m.Hash()
	if err != nil {
		s.storeError(w, "", err)
		return
	}
	blocks, data := m.NonZero()
	img := images.Image{Name: req.Name, Version: req.Version, Digest: d, Size: m.Size, DataBytes: data, DataBlocks: blocks,
		ManifestHash: mh, Source: req.Source, Format: req.Format, Imported: time.Now().UTC(), ImportedBy: by(r)}
	created, err := s.catalog.PutImage(img)
	if err != nil {
		s.storeError(w, "version", err)
		return
	}
	// The daemon collects blobs no image references once they are old (cmd/imaged's collector,
	// which holds the catalog while it decides, Store.WithImageDigests): one could have gone
	// between the manifest read above and PutImage. Once registered it is safe; check it is here.
	if created && !s.blobs.Has(d) {
		if _, _, derr := s.catalog.DeleteImage(img.Name, img.Version); derr != nil {
			s.log.Error("registered an image whose blob was collected meanwhile, and could not take it back", "image", img.Ref(), "err", derr)
		}
		fail(w, http.StatusNotFound, "digest", "blob %s was collected as unregistered while this request registered it (it was older than images.unregistered_grace): import the image again", d)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info("image registered", "image", img.Ref(), "digest", img.Digest, "by", img.ImportedBy)
	}
	// What the catalog keeps: the source without its credentials, or the earlier registration.
	if img, err = s.catalog.ResolveImage(img.Ref()); err != nil {
		s.storeError(w, "", err)
		return
	}
	writeJSON(w, status, img)
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	ref, err := images.ParseRef(r.PathValue("ref"))
	if err != nil {
		fail(w, http.StatusBadRequest, "ref", "%v", err)
		return
	}
	name, version := ref.Name, ref.Tag
	var req PromoteRequest
	if !decode(w, r, &req) {
		return
	}
	if _, err := images.ParseRef(name + "@" + req.Channel); err != nil {
		fail(w, http.StatusBadRequest, "channel", "%q is not a channel name (letters, digits, . _ - +)", req.Channel)
		return
	}
	ch, err := s.catalog.Promote(name, version, req.Channel, by(r))
	if err != nil {
		s.storeError(w, "ref", err)
		return
	}
	s.log.Info("channel promoted", "channel", name+"@"+req.Channel, "version", version, "by", by(r))
	writeJSON(w, http.StatusOK, ch)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	ref, err := images.ParseRef(r.PathValue("ref"))
	if err != nil {
		fail(w, http.StatusBadRequest, "ref", "%v (NAME@CHANNEL)", err)
		return
	}
	name, channel := ref.Name, ref.Tag
	ch, err := s.catalog.Rollback(name, channel, by(r))
	if err != nil {
		s.storeError(w, "ref", err)
		return
	}
	s.log.Info("channel rolled back", "channel", name+"@"+channel, "version", ch.Version, "by", by(r))
	writeJSON(w, http.StatusOK, ch)
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w) {
		return
	}
	ref, err := images.ParseRef(r.PathValue("ref"))
	if err != nil {
		fail(w, http.StatusBadRequest, "ref", "%v", err)
		return
	}
	img, free, err := s.catalog.DeleteImage(ref.Name, ref.Tag)
	if err != nil {
		s.storeError(w, "ref", err)
		return
	}
	s.log.Info("image deleted", "image", img.Ref(), "digest", img.Digest, "by", by(r))
	if free {
		if err := s.removeBlob(img); err != nil {
			fail(w, http.StatusInternalServerError, "", "%s was removed from the catalog, but its blob was not: %v", img.Ref(), err)
			return
		}
	}
	writeJSON(w, http.StatusOK, DeleteReply{Image: img, BlobRemoved: free})
}

func (s *Server) removeBlob(img images.Image) error {
	err := s.blobs.Delete(img.Digest)
	if err != nil {
		s.log.Error("blob of a removed image not deleted", "image", img.Ref(), "digest", img.Digest, "err", err)
	}
	return err
}

func (s *Server) prune(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w) {
		return
	}
	var req PruneRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Keep < 1 {
		fail(w, http.StatusBadRequest, "keep", "keep must be at least 1, not %d", req.Keep)
		return
	}
	removed, kept, err := s.catalog.Prune(req.Keep)
	if err != nil {
		s.storeError(w, "", err)
		return
	}
	reply := PruneReply{Pruned: []images.Image{}, Kept: kept}
	if reply.Kept == nil {
		reply.Kept = map[string][]string{}
	}
	var blobErrs []error
	for _, p := range removed {
		reply.Pruned = append(reply.Pruned, p.Image)
		if p.BlobFree {
			if err := s.removeBlob(p.Image); err != nil {
				blobErrs = append(blobErrs, fmt.Errorf("%s: %w", p.Image.Ref(), err))
			}
		}
	}
	s.log.Info("images pruned", "removed", len(removed), "keep", req.Keep, "by", by(r))
	if len(blobErrs) > 0 {
		fail(w, http.StatusInternalServerError, "", "pruned from the catalog, but some blobs were not removed: %v", errors.Join(blobErrs...))
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := s.inv.Machine(id); !ok {
		fail(w, http.StatusNotFound, "id", "no machine %q in the inventory", id)
		return
	}
	var req AssignRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Image == "" {
		fail(w, http.StatusBadRequest, "image", "the image to assign is required: name@version, name@channel or sha256:<hex>")
		return
	}
	img, ok := s.resolve(w, "image", req.Image)
	if !ok {
		return
	}
	m, err := s.inv.Assign(id, img, by(r))
	if err != nil {
		s.storeError(w, "id", err)
		return
	}
	writeJSON(w, http.StatusOK, AssignReply{Machine: m, Image: img})
}
