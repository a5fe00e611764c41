package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imaged/imaged/images"
)

// Reads follow the API's policy: without api.anonymous_read a page sends the browser to sign in,
// the event stream is refused, and a read token's session reads.
func TestReadPolicy(t *testing.T) {
	w := newWorld(t, false)
	b := w.browser()
	rec := b.get("/ui/machines/ms1-c1n1?x=1")
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login?next=%2Fui%2Fmachines%2Fms1-c1n1%3Fx%3D1" {
		t.Fatalf("an anonymous read: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	if rec := b.get(StreamPath + "?view=chassis"); rec.Code != http.StatusUnauthorized {
		t.Errorf("an anonymous stream: %d", rec.Code)
	}
	if w.refused(ReasonNoSession) != 2 {
		t.Errorf("refusals counted: %v", w.refused(ReasonNoSession))
	}
	checkPage(t, "the sign-in page", b.get("/ui/login"), http.StatusOK, "Sign in")
	rec = b.signIn(readToken)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/" {
		t.Fatalf("sign-in: %d to %q\n%s", rec.Code, rec.Header().Get("Location"), excerpt(rec.Body.String()))
	}
	checkPage(t, "a reader's chassis", b.get("/"), http.StatusOK, `token reader <span class="scope">(read)</span>`, `data-machine="ms1-c1n1"`)
	if body := b.get("/ui/machines/ms1-c1n1").Body.String(); strings.Contains(body, `id="form-reimage"`) {
		t.Errorf("a read token is offered the reimage form")
	}
}

// Signing in: a token that is not one of api.tokens is refused and counted; a good one opens a
// session whose cookie is HttpOnly, SameSite=Strict (Secure over TLS) and holds a random id,
// never the token, which reaches neither a page nor the log. Signing out ends the session.
func TestSignIn(t *testing.T) {
	w := newWorld(t, true)
	b := w.browser()
	b.tls = true
	rec := b.signIn("imaged_not_a_token")
	checkPage(t, "a bad token", rec, http.StatusUnauthorized, "not one of imaged&#39;s API tokens")
	if w.refused(ReasonBadToken) != 1 || strings.Contains(rec.Body.String(), "imaged_not_a_token") {
		t.Errorf("bad token: counted %v; the page shows it back: %v", w.refused(ReasonBadToken), strings.Contains(rec.Body.String(), "imaged_not_a_token"))
	}
	// The sign-in form's own CSRF token: a POST without the cookie it is tied to is refused.
	other := w.browser()
	rec = other.post("/ui/login", url.Values{"csrf": {loginCSRF.FindStringSubmatch(b.get("/ui/login").Body.String())[1]}, "token": {opToken}})
	if rec.Code != http.StatusForbidden || len(other.cookies) != 1 || other.cookies[sessionCookie] != nil {
		t.Errorf("a sign-in without its form's cookie: %d, cookies %v", rec.Code, other.cookies)
	}
	rec = b.signIn(opToken)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", rec.Code)
	}
	var c *http.Cookie
	for _, x := range rec.Result().Cookies() {
		if x.Name == sessionCookie {
			c = x
		}
	}
	if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.MaxAge <= 0 || c.Path != "/" {
		t.Fatalf("session cookie %+v", c)
	}
	if strings.Contains(c.Value, opToken) || len(c.Value) < 40 {
		t.Errorf("the cookie holds %q", c.Value)
	}
	var pages strings.Builder
	for _, p := range []string{"/", "/ui/machines/ms1-c1n1", "/ui/jobs", "/ui/images", "/ui/status", "/ui/login"} {
		pages.WriteString(b.get(p).Body.String())
	}
	if strings.Contains(pages.String(), opToken) || strings.Contains(w.logs.String(), opToken) || strings.Contains(w.logs.String(), "imaged_not_a_token") {
		t.Errorf("the token reached a page or the log")
	}
	if !strings.Contains(w.logs.String(), "dashboard sign-in") {
		t.Errorf("the sign-in is not logged:\n%s", w.logs.String())
	}
	// Over plain HTTP (no TLS) the cookie cannot be Secure: the browser would not send it back.
	plain := w.browser()
	for _, x := range plain.signIn(opToken).Result().Cookies() {
		if x.Name == sessionCookie && x.Secure {
			t.Errorf("a session cookie over plain HTTP is Secure")
		}
	}
	// Sign out: the session is gone, for this cookie too if it were kept.
	old := *b.cookies[sessionCookie]
	if rec := b.act("/ui/logout", nil); rec.Code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", rec.Code)
	}
	if _, ok := w.web.sessions.get(old.Value); ok {
		t.Errorf("the session outlived its sign-out")
	}
}

// An action is refused, with nothing changed and the refusal counted, without a session, without
// its CSRF token or with another's, from another origin, after the session ended, and for a
// read token; the same action with all of them goes through.
func TestActionAttacks(t *testing.T) {
	w := newWorld(t, true)
	reimage := url.Values{"image": {"debian@production"}, "confirm": {"yes"}}
	path := "/ui/machines/ms1-c1n2/reimage"
	op := w.browser()
	op.signIn(opToken)
	csrf := op.csrf("/ui/status")
	reader := w.browser()
	reader.remote = "192.0.2.20:1"
	reader.signIn(readToken)
	other := w.browser()
	other.remote = "192.0.2.30:1"
	other.signIn(opToken)
	with := func(v url.Values, kv ...string) url.Values {
		out := url.Values{}
		for k, x := range v {
			out[k] = x
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	anonymous := w.browser()
	for _, c := range []struct {
		name   string
		do     func() int
		status int
		reason string
	}{
		{"no session", func() int { return anonymous.post(path, with(reimage, "csrf", csrf)).Code }, 401, ReasonNoSession},
		{"no CSRF token", func() int { return op.post(path, reimage).Code }, 403, ReasonCSRF},
		{"a wrong CSRF token", func() int { return op.post(path, with(reimage, "csrf", flipFirst(csrf))).Code }, 403, ReasonCSRF},
		{"another session's CSRF token", func() int { return op.post(path, with(reimage, "csrf", other.csrf("/ui/status"))).Code }, 403, ReasonCSRF},
		{"a read token", func() int { return reader.post(path, with(reimage, "csrf", reader.csrf("/ui/status"))).Code }, 403, ReasonScope},
		{"another origin", func() int {
			r := newFormRequest(path, with(reimage, "csrf", csrf))
			r.Header.Set("Origin", "https://evil.example")
			return op.do(r).Code
		}, 403, ReasonOrigin},
	} {
		before := w.refused(c.reason)
		if got := c.do(); got != c.status {
			t.Errorf("%s: status %d, want %d", c.name, got, c.status)
		}
		if w.refused(c.reason) != before+1 {
			t.Errorf("%s: not counted as %s", c.name, c.reason)
		}
		if n := w.jobs.count(); n != 0 {
			t.Fatalf("%s: %d jobs submitted", c.name, n)
		}
	}
	// The session ends SessionTTL after its sign-in: its cookie no longer acts.
	late := w.browser()
	late.remote = "192.0.2.40:1"
	late.signIn(opToken)
	lateCSRF := late.csrf("/ui/status")
	w.advance(DefaultSessionTTL + time.Second)
	if rec := late.post(path, with(reimage, "csrf", lateCSRF)); rec.Code != http.StatusUnauthorized || w.refused(ReasonExpired) != 1 || w.jobs.count() != 0 {
		t.Errorf("an expired session: %d, counted %v, jobs %d", rec.Code, w.refused(ReasonExpired), w.jobs.count())
	}
	w.clock = time.Time{}
	// With everything in order, the same request acts, recorded with the token's name.
	rec := op.post(path, with(reimage, "csrf", csrf))
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/machines/ms1-c1n2" || w.jobs.count() != 1 {
		t.Fatalf("the reimage: %d to %q, jobs %d\n%s", rec.Code, rec.Header().Get("Location"), w.jobs.count(), excerpt(rec.Body.String()))
	}
	if j, _ := w.jobs.Get("job01"); j.By != "token ops" || j.Image.Ref() != (images.Ref{Name: "debian", Tag: "12.1"}) || j.Image.Channel != "debian@production" {
		t.Errorf("the job: by %q, image %+v", j.By, j.Image)
	}
	checkPage(t, "the flash after the reimage", op.get("/ui/machines/ms1-c1n2"), http.StatusOK, "Reimage of ms1-c1n2 with debian@12.1 submitted: job job01.")
}

func newFormRequest(path string, form url.Values) *http.Request {
	r, _ := http.NewRequest("POST", "http://example.com"+path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// Sessions are bounded: a client's oldest makes way for its newest; when all are taken, a
// sign-in is refused (and counted) rather than signing someone else out.
func TestSessionBounds(t *testing.T) {
	w := newWorld(t, true) // at most 4 sessions, 2 per client
	first := w.browser()
	first.signIn(opToken)
	second, third := w.browser(), w.browser()
	second.signIn(opToken)
	third.signIn(opToken)
	if _, ok := w.web.sessions.get(first.cookies[sessionCookie].Value); ok {
		t.Errorf("the client's oldest session survived its third sign-in")
	}
	if _, ok := w.web.sessions.get(third.cookies[sessionCookie].Value); !ok {
		t.Errorf("the newest session is not open")
	}
	b := w.browser()
	b.remote = "192.0.2.99:1"
	b.signIn(opToken)
	b.signIn(opToken) // a new sign-in replaces the browser's session: 3 in all
	if n := len(w.web.sessions.byID); n != 3 {
		t.Fatalf("%d sessions open, want 3", n)
	}
	d := w.browser()
	d.remote = b.remote
	d.signIn(opToken) // 4 in all
	c := w.browser()
	c.remote = "192.0.2.98:1"
	if rec := c.signIn(opToken); rec.Code != http.StatusServiceUnavailable || w.refused(ReasonSessionsFull) != 1 {
		t.Errorf("a fifth session: %d, counted %v", rec.Code, w.refused(ReasonSessionsFull))
	}
}

// flipFirst is s with another first character.
func flipFirst(s string) string {
	if s[0] == 'x' {
		return "y" + s[1:]
	}
	return "x" + s[1:]
}
