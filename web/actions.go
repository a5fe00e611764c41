package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/imaged/imaged/internal/api"
)

// The dashboard's actions. Each is a form that POSTs here (act has checked the session, its CSRF
// token and the scope), asks for a ticked confirmation, calls internal/api's operation with the
// signed-in token's Principal and redirects (303) to the page that shows the result; a refusal
// comes back on the same page with the operation's message beside the field it names, and
// nothing changed.

// confirmed reports whether the form's confirmation box was ticked.
func confirmed(r *http.Request) bool { return r.PostForm.Get("confirm") == "yes" }

const confirmMsg = "Tick the box to confirm."

// refused is an operation's refusal for form, as the page shows it, with the API's status;
// except that what a field names and is not found (an image) is a bad form value, 400: the page
// itself exists.
func refused(form string, err error) (int, formError) {
	p := api.AsProblem(err)
	status := p.Status
	if status == http.StatusNotFound && p.Field != "id" {
		status = http.StatusBadRequest
	}
	return status, formError{Form: form, Field: p.Field, Msg: p.Msg}
}

func (s *Server) flash(v viewer, format string, args ...any) {
	s.sessions.addFlash(v.session, fmt.Sprintf(format, args...))
}

func machineURL(id string) string { return "/ui/machines/" + url.PathEscape(id) }
func jobURL(id string) string     { return "/ui/jobs/" + url.PathEscape(id) }

func (s *Server) reimage(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	if !confirmed(r) {
		s.showMachine(w, r, v, http.StatusBadRequest, formError{Form: "reimage", Field: "confirm", Msg: confirmMsg})
		return
	}
	j, err := s.d.API.Reimage(r.Context(), v.who, id, strings.TrimSpace(r.PostForm.Get("image")), nil)
	if err != nil {
		status, fe := refused("reimage", err)
		s.showMachine(w, r, v, status, fe)
		return
	}
	s.flash(v, "Reimage of %s with %s submitted: job %s.", id, j.Image.Ref(), j.ID)
	http.Redirect(w, r, machineURL(id), http.StatusSeeOther)
}

func (s *Server) reboot(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	if !confirmed(r) {
		s.showMachine(w, r, v, http.StatusBadRequest, formError{Form: "reboot", Field: "confirm", Msg: confirmMsg})
		return
	}
	j, err := s.d.API.Reboot(r.Context(), v.who, id, nil)
	if err != nil {
		status, fe := refused("reboot", err)
		s.showMachine(w, r, v, status, fe)
		return
	}
	s.flash(v, "Reboot of %s submitted: job %s.", id, j.ID)
	http.Redirect(w, r, machineURL(id), http.StatusSeeOther)
}

// powerActions are the power form's choices (power.ParseAction reads them).
var powerActions = []string{"on", "off", "shutdown", "restart", "graceful-restart", "cycle"}

func (s *Server) power(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	if !confirmed(r) {
		s.showMachine(w, r, v, http.StatusBadRequest, formError{Form: "power", Field: "confirm", Msg: confirmMsg})
		return
	}
	action := r.PostForm.Get("action")
	mp, err := s.d.API.Power(r.Context(), v.who, id, action)
	if err != nil {
		status, fe := refused("power", err)
		s.showMachine(w, r, v, status, fe)
		return
	}
	s.flash(v, "Power %s of %s done: read back %s.", action, id, mp.System.Power)
	http.Redirect(w, r, machineURL(id), http.StatusSeeOther)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	if !confirmed(r) {
		s.showJob(w, r, v, http.StatusBadRequest, formError{Form: "cancel", Field: "confirm", Msg: confirmMsg})
		return
	}
	j, err := s.d.API.CancelJob(v.who, id)
	if err != nil {
		if p := api.AsProblem(err); p.Status == http.StatusNotFound {
			s.notFound(w, r, v, "There is no job "+id+".")
			return
		}
		status, fe := refused("cancel", err)
		s.showJob(w, r, v, status, fe)
		return
	}
	s.flash(v, "Cancel of job %s (%s of %s) requested.", j.ID, j.Kind, j.Machine)
	http.Redirect(w, r, safeNext(cmpOr(r.PostForm.Get("back"), jobURL(id))), http.StatusSeeOther)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("id")
	if !confirmed(r) {
		s.showJob(w, r, v, http.StatusBadRequest, formError{Form: "retry", Field: "confirm", Msg: confirmMsg})
		return
	}
	j, err := s.d.API.RetryJob(r.Context(), v.who, id)
	if err != nil {
		if p := api.AsProblem(err); p.Status == http.StatusNotFound && p.Field == "id" {
			if _, ok := s.jobOf(id); !ok {
				s.notFound(w, r, v, "There is no job "+id+".")
				return
			}
		}
		status, fe := refused("retry", err)
		s.showJob(w, r, v, status, fe)
		return
	}
	s.flash(v, "Job %s retried as job %s.", id, j.ID)
	http.Redirect(w, r, jobURL(j.ID), http.StatusSeeOther)
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request, v viewer) {
	name := r.PathValue("name")
	form := "promote " + name
	if !confirmed(r) {
		s.showImages(w, r, v, http.StatusBadRequest, formError{Form: form, Field: "confirm", Msg: confirmMsg})
		return
	}
	ref := name + "@" + r.PostForm.Get("version")
	ch, err := s.d.API.Promote(v.who, ref, strings.TrimSpace(r.PostForm.Get("channel")))
	if err != nil {
		status, fe := refused(form, err)
		s.showImages(w, r, v, status, fe)
		return
	}
	s.flash(v, "%s@%s now points at %s.", ch.Name, ch.Channel, ch.Version)
	http.Redirect(w, r, "/ui/images", http.StatusSeeOther)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, v viewer) {
	ref := r.PathValue("ref")
	form := "rollback " + ref
	if !confirmed(r) {
		s.showImages(w, r, v, http.StatusBadRequest, formError{Form: form, Field: "confirm", Msg: confirmMsg})
		return
	}
	ch, err := s.d.API.Rollback(v.who, ref)
	if err != nil {
		status, fe := refused(form, err)
		s.showImages(w, r, v, status, fe)
		return
	}
	s.flash(v, "%s@%s rolled back to %s.", ch.Name, ch.Channel, ch.Version)
	http.Redirect(w, r, "/ui/images", http.StatusSeeOther)
}

// bulkData is the bulk reimage's confirmation page: the machines it will touch.
type bulkData struct {
	Filter Filter
	Rows   []Row
	Image  string
	Images []string
	Form   formError
}

// maxBulk bounds the machines one bulk reimage names (more than any chassis' inventory).
const maxBulk = 4096

// bulkPage is GET /ui/bulk: the machines the chassis page's filter selects now, and the form
// that reimages exactly those.
func (s *Server) bulkPage(w http.ResponseWriter, r *http.Request, v viewer) {
	f, errs := parseFilter(r.URL.Query())
	if len(errs) > 0 {
		s.render(w, r, http.StatusBadRequest, "error", page{Title: "Bad request", Viewer: v, Data: errorPage{Status: http.StatusBadRequest, Msg: "The filter is not one the chassis page has."}})
		return
	}
	d := bulkData{Filter: f, Images: s.imageChoices()}
	for _, row := range s.fleet(f).Rows {
		if f.Match(row) {
			d.Rows = append(d.Rows, row)
		}
	}
	s.render(w, r, http.StatusOK, "bulk", page{Title: "Reimage machines", Nav: "chassis", Viewer: v, Data: d})
}

// bulk is POST /ui/bulk: reimages the machines the confirmation page listed (not the filter's
// set of now, which may have changed) with one image, checked once before any machine is touched.
func (s *Server) bulk(w http.ResponseWriter, r *http.Request, v viewer) {
	f, _ := parseFilter(r.PostForm)
	ids := r.PostForm["machine"]
	image := strings.TrimSpace(r.PostForm.Get("image"))
	again := func(status int, fe formError) {
		d := bulkData{Filter: f, Image: image, Images: s.imageChoices(), Form: fe}
		for _, row := range s.fleet(f).Rows {
			if slices.Contains(ids, row.ID) {
				d.Rows = append(d.Rows, row)
			}
		}
		s.render(w, r, status, "bulk", page{Title: "Reimage machines", Nav: "chassis", Viewer: v, Data: d})
	}
	switch {
	case len(ids) == 0:
		again(http.StatusBadRequest, formError{Form: "bulk", Field: "machine", Msg: "No machine is selected: the filter selects none."})
		return
	case len(ids) > maxBulk:
		again(http.StatusBadRequest, formError{Form: "bulk", Field: "machine", Msg: fmt.Sprintf("At most %d machines at once.", maxBulk)})
		return
	case !confirmed(r):
		again(http.StatusBadRequest, formError{Form: "bulk", Field: "confirm", Msg: confirmMsg})
		return
	}
	img, err := s.d.API.Resolve("image", image)
	if err != nil {
		status, fe := refused("bulk", err)
		again(status, fe)
		return
	}
	var done, refusedIDs []string
	for _, id := range ids {
		j, err := s.d.API.Reimage(r.Context(), v.who, id, image, nil)
		if err != nil {
			refusedIDs = append(refusedIDs, id+": "+api.AsProblem(err).Msg)
			continue
		}
		done = append(done, j.ID)
	}
	msg := fmt.Sprintf("Reimage with %s submitted for %d of %d machines.", img.Ref(), len(done), len(ids))
	if len(refusedIDs) > 0 {
		msg += " Refused: " + strings.Join(refusedIDs, "; ")
	}
	s.flash(v, "%s", msg)
	http.Redirect(w, r, "/"+string(f.Query()), http.StatusSeeOther)
}
