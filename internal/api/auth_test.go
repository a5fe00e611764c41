package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func hashOf(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func TestAuthenticate(t *testing.T) {
	mux := http.NewServeMux()
	srv := New(Deps{Inventory: nil})
	var seen Principal
	srv.route(mux, "GET /api/v1/thing", ScopeRead, func(w http.ResponseWriter, r *http.Request) { seen, _ = principalOf(r) })
	srv.route(mux, "POST /api/v1/thing", ScopeOperate, func(w http.ResponseWriter, r *http.Request) { seen, _ = principalOf(r) })
	srv.route(mux, "POST /agent/v1/x", ScopeNone, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	cfg := AuthConfig{Tokens: []Token{{Name: "dash", Scope: ScopeRead, SHA256: hashOf("r-token")}, {Name: "roller", Scope: ScopeOperate, SHA256: strings.ToUpper(hashOf("o-token"))}},
		CORSOrigins: []string{"https://dash.example"}}
	strict := Authenticate(cfg, mux)
	do := func(h http.Handler, method, path, auth, origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
			if method == "OPTIONS" {
				r.Header.Set("Access-Control-Request-Method", "POST")
			}
		}
		w := httptest.NewRecorder()
		seen = Principal{}
		h.ServeHTTP(w, r)
		return w
	}
	for _, c := range []struct {
		name, method, path, auth string
		status                   int
		who                      string
	}{
		{"read without a token", "GET", "/api/v1/thing", "", 401, ""},
		{"read with a read token", "GET", "/api/v1/thing", "Bearer r-token", 200, "token dash"},
		{"change with a read token", "POST", "/api/v1/thing", "Bearer r-token", 403, ""},
		{"change with an operate token (hash in upper case)", "POST", "/api/v1/thing", "Bearer o-token", 200, "token roller"},
		{"an unknown token", "GET", "/api/v1/thing", "Bearer nope", 401, ""},
		{"not a bearer token", "GET", "/api/v1/thing", "Basic YTpi", 401, ""},
		{"the agent's own auth is not touched", "POST", "/agent/v1/x", "Bearer boot-token", 299, ""},
	} {
		w := do(strict, c.method, c.path, c.auth, "")
		if w.Code != c.status || seen.Name != c.who {
			t.Errorf("%s: %d as %q, want %d as %q: %s", c.name, w.Code, seen.Name, c.status, c.who, w.Body)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	}
	// Anonymous reads when configured, but still no anonymous changes.
	open := Authenticate(AuthConfig{AnonymousRead: true}, mux)
	if w := do(open, "GET", "/api/v1/thing", "", ""); w.Code != 200 || seen.Name != "anonymous" {
		t.Errorf("anonymous read: %d %q", w.Code, seen.Name)
	}
	if w := do(open, "POST", "/api/v1/thing", "", ""); w.Code != 401 {
		t.Errorf("anonymous change: %d", w.Code)
	}
	// CORS: the configured origin only.
	if w := do(strict, "OPTIONS", "/api/v1/thing", "", "https://dash.example"); w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://dash.example" ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v", w.Code, w.Header())
	}
	if w := do(strict, "GET", "/api/v1/thing", "Bearer r-token", "https://evil.example"); w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS header for an origin not configured: %v", w.Header())
	}
}
