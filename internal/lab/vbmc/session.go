package vbmc

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"
)

// sessions is the bounded session table (DSP0266 "Session-based authentication").
type sessions struct {
	max     int
	timeout time.Duration

	mu      sync.Mutex
	byToken map[string]*session // by SHA-256 of the token, so the table holds no usable secret
	byID    map[string]*session
}

type session struct {
	id, user, tokenHash string
	created, lastUsed   time.Time
}

func newSessions(max int, timeout time.Duration) *sessions {
	return &sessions{max: max, timeout: timeout, byToken: map[string]*session{}, byID: map[string]*session{}}
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// expireLocked drops the sessions idle for longer than the timeout. DSP0266: "the service
// shall terminate a session after SessionTimeout seconds of inactivity".
func (t *sessions) expireLocked(now time.Time) {
	for id, s := range t.byID {
		if now.Sub(s.lastUsed) > t.timeout {
			delete(t.byID, id)
			delete(t.byToken, s.tokenHash)
		}
	}
}

// create adds a session and returns it with its token, or false when the table is full.
func (t *sessions) create(user string) (*session, string, bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
	if len(t.byID) >= t.max {
		return nil, "", false
	}
	tok := rand.Text() + rand.Text() // 2 × 128 bits of base32
	s := &session{id: rand.Text()[:16], user: user, tokenHash: hashToken(tok), created: now, lastUsed: now}
	t.byID[s.id] = s
	t.byToken[s.tokenHash] = s
	return s, tok, true
}

// use finds the live session of a token and marks it used.
func (t *sessions) use(tok string) (*session, bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
	s := t.byToken[hashToken(tok)]
	if s == nil {
		return nil, false
	}
	s.lastUsed = now
	return s, true
}

func (t *sessions) get(id string) (session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(time.Now())
	s := t.byID[id]
	if s == nil {
		return session{}, false
	}
	return *s, true
}

func (t *sessions) remove(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byID[id]
	if s == nil {
		return false
	}
	delete(t.byID, id)
	delete(t.byToken, s.tokenHash)
	return true
}

func (t *sessions) ids() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(time.Now())
	out := make([]string, 0, len(t.byID))
	for id := range t.byID {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// checkPassword compares credentials in constant time.
func (s *Server) checkPassword(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password))
	return u&p == 1
}

// authenticated reports whether r carries a live session token or valid Basic credentials.
// A request with an X-Auth-Token is judged by that token alone.
func (s *Server) authenticated(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		_, ok := s.sess.use(tok)
		return ok
	}
	user, pass, ok := r.BasicAuth()
	return ok && s.checkPassword(user, pass)
}

func (s *Server) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authenticated(r) {
			errUnauthorized(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

const sessionsPath = "/redfish/v1/SessionService/Sessions"

func (s *Server) serveSessionService(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeResource(w, http.StatusOK, map[string]any{
		"@odata.id":      "/redfish/v1/SessionService",
		"@odata.type":    "#SessionService.v1_1_9.SessionService",
		"Id":             "SessionService",
		"Name":           "Session Service",
		"ServiceEnabled": true,
		"SessionTimeout": int(s.cfg.SessionTimeout / time.Second),
		"Sessions":       link(sessionsPath),
		"Status":         map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

// sessionsCollection lists the sessions (authenticated) and creates one (POST, the login,
// which needs no prior authentication).
func (s *Server) sessionsCollection() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet, http.MethodPost) {
			return
		}
		if r.Method == http.MethodPost {
			s.login(w, r)
			return
		}
		if !s.authenticated(r) {
			errUnauthorized(w)
			return
		}
		var members []string
		for _, id := range s.sess.ids() {
			members = append(members, sessionsPath+"/"+id)
		}
		writeResource(w, http.StatusOK, collection(sessionsPath, "SessionCollection", "Session Collection", members))
	})
}

// login is POST .../Sessions {"UserName": ..., "Password": ...}: 201 with the token in
// X-Auth-Token and the session's URI in Location (DSP0266 "Session login").
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		UserName *string
		Password *string
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, msgMalformedJSON.info(""))
		return
	}
	var missing []extendedInfo
	if req.UserName == nil {
		missing = append(missing, msgPropertyMissing.info("#/UserName", "UserName"))
	}
	if req.Password == nil {
		missing = append(missing, msgPropertyMissing.info("#/Password", "Password"))
	}
	if len(missing) > 0 {
		writeError(w, http.StatusBadRequest, missing...)
		return
	}
	if !s.checkPassword(*req.UserName, *req.Password) {
		s.log.Warn("login refused", "user", *req.UserName, "remote", r.RemoteAddr)
		errUnauthorized(w)
		return
	}
	sess, tok, ok := s.sess.create(*req.UserName)
	if !ok {
		s.log.Warn("login refused: session table full", "max", s.cfg.MaxSessions, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, msgSessionLimit.info(""))
		return
	}
	s.log.Debug("session created", "session", sess.id, "remote", r.RemoteAddr)
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", sessionsPath+"/"+sess.id)
	writeResource(w, http.StatusCreated, sessionDoc(*sess))
}

func sessionDoc(s session) map[string]any {
	return map[string]any{
		"@odata.id":   sessionsPath + "/" + s.id,
		"@odata.type": "#Session.v1_7_0.Session",
		"Id":          s.id,
		"Name":        "User Session",
		"UserName":    s.user,
		"CreatedTime": s.created.UTC().Format(time.RFC3339),
	}
}

// serveSession is one session: GET, or DELETE to log out.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodDelete) {
		return
	}
	id := r.PathValue("sid")
	if r.Method == http.MethodDelete {
		if !s.sess.remove(id) {
			errMissing(w, r)
			return
		}
		s.log.Debug("session deleted", "session", id)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	sess, ok := s.sess.get(id)
	if !ok {
		errMissing(w, r)
		return
	}
	writeResource(w, http.StatusOK, sessionDoc(sess))
}
