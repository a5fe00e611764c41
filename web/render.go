package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/version"
)

// pageTemplate is one page: the layout, the shared fragments and the page's own file.
type pageTemplate struct {
	t *template.Template
}

// parsePages parses every page of templates/ (each file but layout.html and fragments.html)
// with the layout and the fragments.
func parsePages() (map[string]*pageTemplate, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/fragments.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*pageTemplate{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" || name == "fragments" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", n, err)
		}
		out[name] = &pageTemplate{t: t}
	}
	out["fragments"] = &pageTemplate{t: base}
	return out, nil
}

// page is what every page's template gets.
type page struct {
	Title   string
	Nav     string // the current section: chassis, jobs, images, status
	Viewer  viewer
	Flash   []string
	Live    string // the page's event stream URL, "" for a page without live updates
	Version string
	Static  string // the query that versions static URLs
	Data    any
}

// csp lets the pages load only their own scripts, styles and stream: no inline script or style,
// nothing from elsewhere, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
}

// render writes page name with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Version = version.Version
	p.Static = "?v=" + version.Version
	if p.Viewer.session != nil {
		p.Flash = s.sessions.takeFlash(p.Viewer.session)
	}
	var b bytes.Buffer
	if err := s.pages[name].t.ExecuteTemplate(&b, "layout", p); err != nil {
		s.log.Error("web: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered; see imaged's log", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// fragment renders one named template of the fragments into b.
func (s *Server) fragment(b *bytes.Buffer, name string, data any) error {
	return s.pages["fragments"].t.ExecuteTemplate(b, name, data)
}

// notFound is the 404 page.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request, v viewer, msg string) {
	s.render(w, r, http.StatusNotFound, "error", page{Title: "Not found", Viewer: v, Data: errorPage{Status: http.StatusNotFound, Msg: msg}})
}

// errorPage is the body of an error page.
type errorPage struct {
	Status int
	Msg    string
	Login  bool // offer the sign-in
}

// StatusText is the status's text.
func (e errorPage) StatusText() string { return http.StatusText(e.Status) }

var funcs = template.FuncMap{
	"rel":          rel,
	"utc":          utc,
	"iso":          func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"bytes":        humanBytes,
	"rate":         func(r float64) string { return humanBytes(int64(r)) + "/s" },
	"dur":          humanDuration,
	"short":        shortDigest,
	"states":       func() []State { return States },
	"flagSet":      func() []string { return []string{FlagStale, FlagDegraded} },
	"add":          func(a, b int) int { return a + b },
	"confirmBox":   func(id, label, err string) confirmBox { return confirmBox{ID: id, Label: label, Err: err} },
	"jobTable":     func(caption string, js []jobs.Job) jobTable { return jobTable{Caption: caption, Jobs: js} },
	"powerActions": func() []string { return powerActions },
}

// confirmBox is a form's confirmation checkbox.
type confirmBox struct{ ID, Label, Err string }

// jobTable is a table of jobs with its caption.
type jobTable struct {
	Caption string
	Jobs    []jobs.Job
}

// rel is t relative to now, in words ("3 min ago", "in 2 h").
func rel(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + humanDuration(-d)
	}
	if d < 5*time.Second {
		return "just now"
	}
	return humanDuration(d) + " ago"
}

// utc is t's absolute time in UTC, to the second.
func utc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortDigest is the first 12 hex digits of d, as docker shows an image id.
func shortDigest(d images.Digest) string {
	if d.IsZero() {
		return ""
	}
	h := d.Hex()
	return h[:min(12, len(h))]
}
