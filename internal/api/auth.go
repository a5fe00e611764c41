package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
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
	Name  string
	Scope Scope
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

// require wraps h so that only callers with at least scope reach it: 401 without credentials,
// 403 with too small a scope.
func require(scope Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := principalOf(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="imaged"`)
			fail(w, http.StatusUnauthorized, "", "this request changes state and needs the %s scope: use imaged's control socket (the imaged CLI on the server does)", scope)
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
	if op := r.Header.Get(OperatorHeader); op != "" && p.Name != "" {
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
	p := Principal{Name: fmt.Sprintf("uid %d via the control socket", cred.Uid), Scope: ScopeNone}
	if cred.Uid == 0 || int(cred.Uid) == os.Getuid() {
		p.Scope = ScopeAdmin
	}
	return WithPrincipal(ctx, p)
}
