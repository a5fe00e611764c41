package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/api"
)

// Sign-in. A person signs in with an API token (api.tokens, checked by api.Tokens exactly as a
// bearer token is); the dashboard keeps a session in memory and gives the browser its random id
// in a cookie (HttpOnly, SameSite=Strict, Secure over TLS). The token itself is never kept, nor
// written to a page, a log or the cookie. Every form carries the session's CSRF token, compared
// in constant time; the sign-in form, before there is a session, carries one tied to a
// short-lived cookie of its own (a login CSRF: another site cannot sign a browser in as someone
// else). Sessions are bounded in time (Config.SessionTTL, from sign-in) and in count, in all and
// per client address; every refusal is counted in imaged_web_refused_total{reason}.

const (
	sessionCookie = "imaged_session"
	loginCookie   = "imaged_login"
	loginTTL      = 15 * time.Minute
	maxFlash      = 8
	maxForm       = 64 << 10
)

// Refusal reasons: the reason label of imaged_web_refused_total.
const (
	ReasonBadToken     = "bad_token"     // a sign-in with a token that is not one of api.tokens
	ReasonNoSession    = "no_session"    // an action, or a read that needs one, without a session
	ReasonExpired      = "expired"       // a session cookie whose session ended or is unknown
	ReasonCSRF         = "csrf"          // a form without its CSRF token, or with another
	ReasonScope        = "scope"         // a signed-in token without the scope an action needs
	ReasonOrigin       = "origin"        // a POST whose Origin is not this dashboard
	ReasonSessionsFull = "sessions_full" // DefaultMaxSessions sessions were open
)

var reasons = []string{ReasonBadToken, ReasonNoSession, ReasonExpired, ReasonCSRF, ReasonScope, ReasonOrigin, ReasonSessionsFull}

// session is one signed-in browser.
type session struct {
	id      string
	csrf    string
	who     api.Principal
	client  netip.Addr
	created time.Time
	expires time.Time
	flash   []string
}

// sessions are the open sessions, in memory: a restart signs everyone out.
type sessions struct {
	cfg Config
	met *metrics
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(cfg Config, met *metrics, now func() time.Time) *sessions {
	return &sessions{cfg: cfg, met: met, now: now, byID: map[string]*session{}}
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

var errSessionsFull = errors.New("too many sessions are open")

// open starts a session for who from client. The oldest session of the same client makes way
// when the client has its share; when every slot is taken by live sessions, the sign-in is
// refused rather than signing someone else out.
func (ss *sessions) open(who api.Principal, client netip.Addr) (*session, error) {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.expireLocked(now)
	var oldest *session
	n := 0
	for _, s := range ss.byID {
		if s.client == client {
			n++
			if oldest == nil || s.created.Before(oldest.created) {
				oldest = s
			}
		}
	}
	if n >= ss.cfg.MaxSessionsPerClient {
		delete(ss.byID, oldest.id)
	}
	if len(ss.byID) >= ss.cfg.MaxSessions {
		return nil, errSessionsFull
	}
	s := &session{id: randomID(), csrf: randomID(), who: who, client: client, created: now, expires: now.Add(ss.cfg.SessionTTL)}
	ss.byID[s.id] = s
	ss.met.sessions.Set(float64(len(ss.byID)))
	return s, nil
}

func (ss *sessions) expireLocked(now time.Time) {
	for id, s := range ss.byID {
		if !now.Before(s.expires) {
			delete(ss.byID, id)
		}
	}
	ss.met.sessions.Set(float64(len(ss.byID)))
}

// get is the live session of id.
func (ss *sessions) get(id string) (*session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok {
		return nil, false
	}
	if !ss.now().Before(s.expires) {
		delete(ss.byID, id)
		ss.met.sessions.Set(float64(len(ss.byID)))
		return nil, false
	}
	return s, true
}

func (ss *sessions) close(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
	ss.met.sessions.Set(float64(len(ss.byID)))
}

func (ss *sessions) addFlash(s *session, msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s.flash = append(s.flash, msg)
	if len(s.flash) > maxFlash {
		s.flash = s.flash[len(s.flash)-maxFlash:]
	}
}

func (ss *sessions) takeFlash(s *session) []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// viewer is who looks at a page: a session's token, or anonymous (api.anonymous_read).
type viewer struct {
	session *session
	who     api.Principal
}

// SignedIn reports whether the viewer has a session.
func (v viewer) SignedIn() bool { return v.session != nil }

// Name is the signed-in token's name ("token NAME").
func (v viewer) Name() string { return v.who.Name }

// Scope is the viewer's scope's name.
func (v viewer) Scope() string { return v.who.Scope.String() }

// CanAct reports whether the viewer may act (operate or admin).
func (v viewer) CanAct() bool { return v.session != nil && v.who.Scope >= api.ScopeOperate }

// CSRF is the token every form of the viewer's session carries.
func (v viewer) CSRF() string {
	if v.session == nil {
		return ""
	}
	return v.session.csrf
}

// sessionOf is the live session r's cookie names; expired is true when the cookie names one
// that ended (or that a restart forgot).
func (s *Server) sessionOf(r *http.Request) (sess *session, expired bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	sess, ok := s.sessions.get(c.Value)
	return sess, !ok
}

// read wraps a page: a session's token with the read scope at least, or anyone when
// api.anonymous_read allows it; else a GET is sent to the sign-in page.
func (s *Server) read(h func(http.ResponseWriter, *http.Request, viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, expired := s.sessionOf(r)
		switch {
		case sess != nil && sess.who.Scope >= api.ScopeRead:
			h(w, r, viewer{session: sess, who: sess.who})
		case s.cfg.AnonymousRead:
			h(w, r, viewer{who: api.Principal{Name: "anonymous", Scope: api.ScopeRead, Anonymous: true}})
		default:
			s.met.refuse(map[bool]string{true: ReasonExpired, false: ReasonNoSession}[expired])
			if r.URL.Path == StreamPath {
				http.Error(w, "sign in first", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/ui/login?"+url.Values{"next": {r.URL.RequestURI()}}.Encode(), http.StatusSeeOther)
		}
	}
}

// act wraps an action (a POST): same origin, a live session, its CSRF token, and at least scope.
// Each refusal is a page that says why, with nothing changed.
func (s *Server) act(scope api.Scope, h func(http.ResponseWriter, *http.Request, viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		refuse := func(reason string, status int, msg string, v viewer) {
			s.met.refuse(reason)
			s.render(w, r, status, "error", page{Title: http.StatusText(status), Viewer: v, Data: errorPage{Status: status, Msg: msg, Login: !v.SignedIn()}})
		}
		if !sameOrigin(r) {
			refuse(ReasonOrigin, http.StatusForbidden, "This form was sent from another site; nothing was changed.", viewer{})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			s.render(w, r, http.StatusBadRequest, "error", page{Title: "Bad request", Data: errorPage{Status: http.StatusBadRequest, Msg: "The form could not be read: " + err.Error()}})
			return
		}
		sess, expired := s.sessionOf(r)
		if sess == nil {
			if expired {
				refuse(ReasonExpired, http.StatusUnauthorized, "Your session has ended; sign in again. Nothing was changed.", viewer{})
			} else {
				refuse(ReasonNoSession, http.StatusUnauthorized, "Sign in with a token of scope operate or admin to do this. Nothing was changed.", viewer{})
			}
			return
		}
		v := viewer{session: sess, who: sess.who}
		if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(sess.csrf)) != 1 {
			refuse(ReasonCSRF, http.StatusForbidden, "This form's CSRF token is missing or not this session's (a page from before a sign-in, or a form from elsewhere). Reload the page and try again; nothing was changed.", v)
			return
		}
		if sess.who.Scope < scope {
			refuse(ReasonScope, http.StatusForbidden, sess.who.Name+" has the "+sess.who.Scope.String()+" scope; this needs "+scope.String()+". Nothing was changed.", v)
			return
		}
		h(w, r, v)
	}
}

// sameOrigin reports whether a POST comes from this dashboard's own pages: its Origin, when the
// browser sends one (they all do for a POST), is this server's scheme and host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return o == scheme+"://"+r.Host
}

// clientOf is r's client address.
func clientOf(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// loginForm is the sign-in page's data.
type loginForm struct {
	Next          string
	CSRF          string
	Error         string
	AnonymousRead bool
}

// safeNext is where to go after signing in: a path of this dashboard, never another site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.showLogin(w, r, http.StatusOK, r.URL.Query().Get("next"), "")
}

// showLogin renders the sign-in form with a fresh login CSRF token in its cookie.
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	tok := randomID()
	s.setCookie(w, r, loginCookie, tok, loginTTL)
	v := viewer{}
	if sess, _ := s.sessionOf(r); sess != nil {
		v = viewer{session: sess, who: sess.who}
	}
	s.render(w, r, status, "login", page{Title: "Sign in", Viewer: v,
		Data: loginForm{Next: safeNext(next), CSRF: tok, Error: msg, AnonymousRead: s.cfg.AnonymousRead}})
}

// login is POST /ui/login: the token is checked as the API checks a bearer token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		s.met.refuse(ReasonOrigin)
		s.render(w, r, http.StatusForbidden, "error", page{Title: "Forbidden", Data: errorPage{Status: http.StatusForbidden, Msg: "This form was sent from another site."}})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.showLogin(w, r, http.StatusBadRequest, "", "The form could not be read.")
		return
	}
	next := r.PostForm.Get("next")
	c, err := r.Cookie(loginCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		s.met.refuse(ReasonCSRF)
		s.showLogin(w, r, http.StatusForbidden, next, "This sign-in form has expired or came from elsewhere; try again.")
		return
	}
	who, ok := s.cfg.Tokens.Principal(strings.TrimSpace(r.PostForm.Get("token")))
	if !ok {
		s.met.refuse(ReasonBadToken)
		s.log.Info("dashboard sign-in refused: not a token of api.tokens", "client", clientOf(r))
		s.showLogin(w, r, http.StatusUnauthorized, next, "That is not one of imaged's API tokens (api.tokens).")
		return
	}
	if old, _ := s.sessionOf(r); old != nil {
		s.sessions.close(old.id) // a new sign-in replaces the browser's session
	}
	sess, err := s.sessions.open(who, clientOf(r))
	if err != nil {
		s.met.refuse(ReasonSessionsFull)
		s.showLogin(w, r, http.StatusServiceUnavailable, next, "Too many dashboard sessions are open; sign out of one, or wait until one ends.")
		return
	}
	s.log.Info("dashboard sign-in", "who", who.Name, "scope", who.Scope, "client", clientOf(r))
	s.setCookie(w, r, loginCookie, "", -time.Second)
	s.setCookie(w, r, sessionCookie, sess.id, s.cfg.SessionTTL)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

// logout is POST /ui/logout.
func (s *Server) logout(w http.ResponseWriter, r *http.Request, v viewer) {
	s.sessions.close(v.session.id)
	s.log.Info("dashboard sign-out", "who", v.who.Name)
	s.setCookie(w, r, sessionCookie, "", -time.Second)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
