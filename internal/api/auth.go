package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Scope is what a caller may do. Each scope includes the ones before it.
type Scope int

const (
	ScopeNone    Scope = iota
	ScopeRead          // look
	ScopeOperate       // change what machines run: promote, rollback, assign
	ScopeAdmin         // change what exists: register, delete, prune
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeOperate:
		return "operate"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// Principal is who is calling: its name goes into every change it makes.
type Principal struct {
	Name      string
	Scope     Scope
	Anonymous bool // no credentials: what api.anonymous_read grants
	Local     bool // on the control socket: the OperatorHeader is recorded beside it
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p; a listener's ConnContext uses it to say who is on the
// other end of a connection.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalOf(r *http.Request) (Principal, bool) {
	p, ok := r.Context().Value(principalKey{}).(Principal)
	return p, ok
}

// OperatorHeader names, on the control socket only, the person behind a command (the CLI's
// -by); it is recorded beside the socket peer's uid, never trusted on its own.
const OperatorHeader = "X-Imaged-Operator"

// ParseScope reads a scope's name.
func ParseScope(s string) (Scope, error) {
	for _, sc := range []Scope{ScopeRead, ScopeOperate, ScopeAdmin} {
		if sc.String() == s {
			return sc, nil
		}
	}
	return ScopeNone, fmt.Errorf("%q is not a scope (read, operate or admin)", s)
}

// Route is one endpoint of the API and the scope it needs (ScopeNone: open, or authenticated
// otherwise, like the agent's boot token or a booted machine's address).
type Route struct {
	Pattern string
	Scope   Scope
}

// route registers h under pattern behind the scope check, and remembers the route.
func (s *Server) route(mux *http.ServeMux, pattern string, scope Scope, h http.HandlerFunc) {
	s.routes = append(s.routes, Route{Pattern: pattern, Scope: scope})
	if scope == ScopeNone {
		mux.HandleFunc(pattern, h)
		return
	}
	mux.HandleFunc(pattern, require(scope, h))
}

// Routes lists the endpoints Register added, in order.
func (s *Server) Routes() []Route { return slices.Clone(s.routes) }

// Token is an API bearer token as the config holds it: a name, a scope and the token's SHA-256.
type Token struct {
	Name   string
	Scope  Scope
	SHA256 string // hex
}

// AuthConfig is who may use the API over TCP.
type AuthConfig struct {
	Tokens        []Token
	AnonymousRead bool     // callers without a token may read
	CORSOrigins   []string // browsers on these origins may call the API
}

// Tokens are the API tokens (api.tokens), by the SHA-256 the config keeps of each: a bearer
// token and the dashboard's sign-in are checked here, the same way.
type Tokens struct {
	byHash map[string]Principal
}

// NewTokens indexes ts.
func NewTokens(ts []Token) *Tokens {
	byHash := map[string]Principal{}
	for _, t := range ts {
		byHash[strings.ToLower(t.SHA256)] = Principal{Name: "token " + t.Name, Scope: t.Scope}
	}
	return &Tokens{byHash: byHash}
}

// Principal is who tok stands for ("token NAME" and its scope); ok is false for a token that
// is not one of api.tokens. Only the token's SHA-256 is looked up, never the token itself.
func (t *Tokens) Principal(tok string) (p Principal, ok bool) {
	if tok == "" {
		return Principal{}, false
	}
	sum := sha256.Sum256([]byte(tok))
	p, ok = t.byHash[hex.EncodeToString(sum[:])]
	return p, ok
}

// Authenticate wraps the TCP listener's handler: a bearer token on an /api/ request becomes the
// request's Principal (an unknown token is refused at once with 401), and browsers on the
// configured origins get CORS headers. The agent's /agent/ endpoints carry boot tokens and are
// left to their handlers. A request that already has a Principal (the control socket) is
// passed through.
func Authenticate(c AuthConfig, next http.Handler) http.Handler {
	tokens := NewTokens(c.Tokens)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			next.ServeHTTP(w, r)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && slices.Contains(c.CORSOrigins, o) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", o)
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if _, ok := principalOf(r); ok {
			next.ServeHTTP(w, r)
			return
		}
		if auth := r.Header.Get("Authorization"); auth != "" {
			tok, ok := strings.CutPrefix(auth, "Bearer ")
			p, known := tokens.Principal(tok)
			if !ok || !known {
				w.Header().Set("WWW-Authenticate", `Bearer realm="imaged", error="invalid_token"`)
				fail(w, http.StatusUnauthorized, "Authorization", "the bearer token is not one of api.tokens")
				return
			}
			r = r.WithContext(WithPrincipal(r.Context(), p))
		} else if c.AnonymousRead {
			r = r.WithContext(WithPrincipal(r.Context(), Principal{Name: "anonymous", Scope: ScopeRead, Anonymous: true}))
		}
		next.ServeHTTP(w, r)
	})
}

// require wraps h so that only callers with at least scope reach it: 401 without credentials,
// 403 with too small a scope.
func require(scope Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := principalOf(r)
		if !ok || p.Anonymous && p.Scope < scope {
			w.Header().Set("WWW-Authenticate", `Bearer realm="imaged"`)
			fail(w, http.StatusUnauthorized, "", "this request needs the %s scope: a token (Authorization: Bearer …; see api.tokens), or imaged's control socket", scope)
			return
		}
		if p.Scope < scope {
			fail(w, http.StatusForbidden, "", "%s has the %s scope; this request needs %s", p.Name, p.Scope, scope)
			return
		}
		h(w, r)
	}
}

// by names the caller of a change for event logs and channel histories.
func by(r *http.Request) string {
	p, _ := principalOf(r)
	if op := r.Header.Get(OperatorHeader); op != "" && p.Local {
		return fmt.Sprintf("%s (%s)", op, p.Name)
	}
	return p.Name
}

// ControlConnContext is the ConnContext of the control socket (a Unix socket, mode 0600): the
// kernel says who the peer is (SO_PEERCRED). root and the daemon's own user are admins; anyone
// else who got through the file mode gets no scope at all.
func ControlConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return ctx
	}
	p := Principal{Name: fmt.Sprintf("uid %d via the control socket", cred.Uid), Scope: ScopeNone, Local: true}
	if cred.Uid == 0 || int(cred.Uid) == os.Getuid() {
		p.Scope = ScopeAdmin
	}
	return WithPrincipal(ctx, p)
}
