package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/store"
)

// apiFlags are how a command reaches imaged's API, and who the operator is.
type apiFlags struct {
	config, server, token, by *string
}

// addAPIFlags adds -config, -server, -token and, when byUsage says what it records, -by.
func addAPIFlags(fs *flag.FlagSet, byUsage string) *apiFlags {
	f := &apiFlags{
		config: configFlag(fs),
		server: fs.String("server", "", "a daemon's API URL (https://…), instead of its control socket or the state file"),
		token:  fs.String("token", os.Getenv("IMAGED_TOKEN"), "API token for -server (also $IMAGED_TOKEN)"),
		by:     new(string),
	}
	*f.by = operator()
	if byUsage != "" {
		f.by = fs.String("by", operator(), byUsage)
	}
	return f
}

// operator names who made a change, for channel histories and events.
func operator() string {
	for _, v := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "unknown"
}

// conn is a command's way to the API.
type conn struct {
	*api.Client
	cfg    *config.File // nil with -server
	local  *state       // the in-process API's; nil when a daemon answers
	socket string
}

// connect reaches the API: with -server, that daemon over HTTP(S) with the token; else the
// daemon's control socket when a daemon answers there (it holds the state file: root and
// imaged's user get the admin scope); else the same API, built as the daemon builds it, served in
// this process over the state file (opened shared for reads), with the operator as an admin.
// Jobs run only in the daemon: the in-process API says so (see daemonOnly).
func (f *apiFlags) connect(stderr io.Writer, readOnly bool) (*conn, error) {
	if *f.server != "" {
		u, err := url.Parse(*f.server)
		if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			return nil, usageError{fmt.Sprintf("-server %q is not a URL like https://10.99.0.1:8444", *f.server)}
		}
		return &conn{Client: api.NewClient(u, *f.token, *f.by)}, nil
	}
	cfg, err := config.Load(*f.config)
	if err != nil {
		return nil, err
	}
	return connectTo(cfg, *f.by, readOnly, stderr)
}

// connectTo reaches the API of the daemon of cfg (its control socket), else serves it in-process;
// by names the operator.
func connectTo(cfg *config.File, by string, readOnly bool, stderr io.Writer) (*conn, error) {
	c := &conn{cfg: cfg, socket: cfg.HTTP.ControlSocket}
	sock, dialErr := net.DialTimeout("unix", c.socket, time.Second)
	if dialErr == nil {
		sock.Close()
		c.Client = api.NewControlClient(c.socket, by)
		return c, nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	c.local, err = openState(cfg, stateOptions{readOnly: readOnly, lockWait: 250 * time.Millisecond, log: log})
	switch {
	case errors.Is(err, store.ErrLocked):
		return nil, fmt.Errorf("%w: another imaged holds it (a daemon, or a command still running), and no daemon answers on its control socket: %w", err, dialErr)
	case readOnly && errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: no daemon answers on %s, and nothing has made the state file yet (imaged serve does, as does a change such as imaged image import)", err, c.socket)
	case err != nil:
		return nil, err
	}
	mux := http.NewServeMux()
	c.local.api(nil, log, nil).Register(mux)
	c.Client = api.NewHandlerClient(mux, api.Principal{Name: by, Scope: api.ScopeAdmin}, by)
	return c, nil
}

func (c *conn) close() {
	if c.local != nil {
		c.local.close()
	}
}

// daemonOnly explains the in-process API's refusal of what only a running daemon does: jobs.
func (c *conn) daemonOnly(err error) error {
	var re *api.ResponseError
	if c.local != nil && errors.As(err, &re) && re.Status == http.StatusServiceUnavailable {
		return fmt.Errorf("%w: no daemon answers on %s, and jobs run only in the daemon: start imaged serve", err, c.socket)
	}
	return err
}
