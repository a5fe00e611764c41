package api

import (
	"errors"
	"io/fs"
	"net/http"
	"os"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/machines"
)

// The image catalog over HTTP (its rules are internal/catalog's): what `imaged image …` and
// `imaged machines assign` use. Reading needs the read scope, changes operate or admin.

// Blobs is the part of the blob store the agent API reads: the manifest of an image, and its
// blob to check an agent's proof of possession.
type Blobs interface {
	Manifest(d images.Digest) (*images.Manifest, error)
	Open(d images.Digest) (*os.File, error)
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

// catalogProblem is an error of the catalog as the API answers it: 404 for what does not
// exist, 409 for a change the catalog's rules refuse, 400 for a malformed reference, 503 without
// a blob store, else 500 (saying what happened when the catalog changed but a blob stayed).
func (s *Server) catalogProblem(field string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return problem(http.StatusNotFound, field, "%v", err)
	case errors.Is(err, images.ErrImmutable), errors.Is(err, images.ErrInUse), errors.Is(err, images.ErrNoHistory), errors.Is(err, images.ErrConflict):
		return problem(http.StatusConflict, field, "%v", err)
	case errors.Is(err, images.ErrBadRef):
		return problem(http.StatusBadRequest, field, "%v", err)
	case errors.Is(err, catalog.ErrNoBlobStore):
		return problem(http.StatusServiceUnavailable, "", "%v", err)
	case errors.Is(err, catalog.ErrBlobKept):
		return problem(http.StatusInternalServerError, "", "%v", err)
	}
	s.log.Error("catalog", "err", err)
	return problem(http.StatusInternalServerError, "", "the catalog could not be changed or read; see imaged's log")
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, chs, err := s.catalog.List()
	if err != nil {
		s.answer(w, s.catalogProblem("", err))
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
func (s *Server) resolve(field, text string) (images.Image, error) {
	ref, err := images.ParseRefOrDigest(text)
	if err != nil {
		return images.Image{}, problem(http.StatusBadRequest, field, "%v", err)
	}
	return s.resolveRef(field, ref)
}

// resolveRef finds the catalog's image of ref; field names where ref came from.
func (s *Server) resolveRef(field string, ref images.Ref) (images.Image, error) {
	img, err := s.catalog.Resolve(ref)
	if err != nil {
		return img, s.catalogProblem(field, err)
	}
	return img, nil
}

// parseRef reads a NAME@TAG; what the tag is (a version, a channel) is the operation's.
func parseRef(field, text, what string) (images.Ref, error) {
	ref, err := images.ParseRef(text)
	if err != nil {
		return ref, problem(http.StatusBadRequest, field, "%v (%s)", err, what)
	}
	return ref, nil
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	ref, err := images.ParseRefOrDigest(r.PathValue("ref"))
	if err != nil {
		fail(w, http.StatusBadRequest, "ref", "%v", err)
		return
	}
	img, chs, err := s.catalog.Show(ref)
	if err != nil {
		s.answer(w, s.catalogProblem("ref", err))
		return
	}
	writeJSON(w, http.StatusOK, ImageInfo{Image: img, Channels: chs})
}

func (s *Server) registerImage(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	ref, err := images.ParseRef(req.Name + "@" + req.Version)
	if err != nil {
		fail(w, http.StatusBadRequest, "name", "name and version: %v", err)
		return
	}
	d, err := images.ParseDigest(req.Digest)
	if err != nil {
		fail(w, http.StatusBadRequest, "digest", "%v", err)
		return
	}
	img, created, err := s.catalog.Register(catalog.Registration{Ref: ref, Digest: d, Source: req.Source, Format: req.Format, By: by(r)})
	switch {
	case errors.Is(err, catalog.ErrNoBlob):
		fail(w, http.StatusNotFound, "digest", "%v", err)
	case err != nil:
		s.answer(w, s.catalogProblem("version", err))
	case created:
		writeJSON(w, http.StatusCreated, img)
	default:
		writeJSON(w, http.StatusOK, img)
	}
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	if _, err := parseRef("ref", r.PathValue("ref"), "NAME@VERSION"); err != nil {
		s.answer(w, err)
		return
	}
	var req PromoteRequest
	if !decode(w, r, &req) {
		return
	}
	ch, err := s.Promote(Actor(r), r.PathValue("ref"), req.Channel)
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	ch, err := s.Rollback(Actor(r), r.PathValue("ref"))
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRef("ref", r.PathValue("ref"), "NAME@VERSION")
	if err != nil {
		s.answer(w, err)
		return
	}
	img, removed, err := s.catalog.Delete(ref, by(r))
	if err != nil {
		s.answer(w, s.catalogProblem("ref", err))
		return
	}
	writeJSON(w, http.StatusOK, DeleteReply{Image: img, BlobRemoved: removed})
}

func (s *Server) prune(w http.ResponseWriter, r *http.Request) {
	var req PruneRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Keep < 1 {
		fail(w, http.StatusBadRequest, "keep", "keep must be at least 1, not %d", req.Keep)
		return
	}
	pruned, kept, err := s.catalog.Prune(req.Keep, by(r))
	if err != nil {
		s.answer(w, s.catalogProblem("", err))
		return
	}
	if kept == nil {
		kept = map[string][]string{}
	}
	writeJSON(w, http.StatusOK, PruneReply{Pruned: pruned, Kept: kept})
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request) {
	if _, err := s.machineOf("id", r.PathValue("id")); err != nil {
		s.answer(w, err)
		return
	}
	var req AssignRequest
	if !decode(w, r, &req) {
		return
	}
	reply, err := s.Assign(Actor(r), r.PathValue("id"), req.Image)
	if err != nil {
		s.answer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}
