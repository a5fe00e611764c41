package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/images/imagehttp"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/httplimit"
	"github.com/imaged/imaged/internal/ipxe"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/servercert"
	"github.com/imaged/imaged/internal/version"
	"github.com/imaged/imaged/web"
)

// loadConfig parses a command's flags (only -config) and loads the config file it names.
func loadConfig(name string, args []string, stderr io.Writer) (*config.File, string, error) {
	fs := newFlags(name, stderr)
	path := configFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, "", err
	}
	cfg, err := config.Load(*path)
	return cfg, *path, err
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	cfg, path, err := loadConfig("check-config", args, stderr)
	if err != nil {
		return err
	}
	https := "https off"
	if cfg.TLSEnabled() {
		https = "https on " + cfg.HTTP.TLS.Listen.String()
	}
	fmt.Fprintf(stdout, "%s: ok (dhcp %s, %d machines, boot assets in %s, http on %s, %s)\n", path, cfg.DHCP.Mode, len(cfg.Machines), cfg.Boot.AssetsDir, cfg.HTTP.Listen, https)
	return nil
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, _, err := loadConfig("serve", args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	d, err := newDaemon(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	return d.run(ctx)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// component is every long-running part of the daemon: New binds, Run serves until ctx ends.
type component interface {
	Run(ctx context.Context) error
}

type daemon struct {
	*state
	log        *slog.Logger
	jobs       *jobs.Manager
	reg        *prometheus.Registry
	components map[string]component
	httpLn     net.Listener
	httpSrv    *http.Server
	httpsLn    net.Listener // nil without TLS
	httpsSrv   *http.Server
	cert       *servercert.Cert // the HTTPS listener's
	ctlLn      net.Listener     // the control socket
	ctlSrv     *http.Server
	closers    []func()
}

// newDaemon opens the state and constructs every component, binding every socket, so that a bad
// address or a missing file stops start-up before anything serves.
func newDaemon(cfg *config.File, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log, reg: prometheus.NewRegistry(), components: map[string]component{}}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.state, err = openState(cfg, stateOptions{log: log, reg: d.reg}); err != nil {
		return nil, err
	}
	if d.jobs, err = newJobs(d); err != nil {
		return nil, err
	}
	d.components["jobs"] = d.jobs
	obs := &observer{inv: d.inv, jobs: d.jobs, log: log, proxy: cfg.DHCP.Mode == config.ModeProxy}
	if err := syncBootPrograms(cfg, log); err != nil {
		return nil, err
	}
	roots := []string{cfg.Boot.AssetsDir}
	// With TLS (the default) the API, the agent's API and images are served on the HTTPS
	// listener only; the plain one keeps what firmware and a booted OS fetch without TLS.
	var httpsURL *url.URL
	if cfg.TLSEnabled() {
		if d.cert, err = loadCert(cfg, log); err != nil {
			return nil, err
		}
		httpsURL = cfg.HTTP.TLS.PublicURL.URL
	}

	bc := ipxe.Config{
		PublicURL:      cfg.HTTP.PublicURL.URL,
		HTTPSURL:       httpsURL,
		Roots:          roots,
		Agent:          ipxe.Agent{Kernel: cfg.Boot.Agent.Kernel, Initrd: cfg.Boot.Agent.Initrd, Cmdline: cfg.Boot.Agent.Cmdline},
		Profiles:       cfg.Boot.Profiles,
		UnknownProfile: unknownProfile(cfg),
	}
	if d.cert != nil {
		bc.TLSPin = d.cert.Fingerprint()
	}
	bh, err := ipxe.New(bc, ipxe.Deps{Inventory: bootInventory{d.inv, d.jobs}, Tokens: bootTokens{d.inv, d.jobs}, Observer: obs, Log: log.With("component", "boot"), Registerer: d.reg})
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, bh.Close)
	if err := d.addNetboot(obs, roots); err != nil {
		return nil, err
	}

	if d.components["images"], err = catalog.NewCollector(d.catalog, cfg.Images.UnregisteredGrace.Duration, d.reg, log.With("component", "images")); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/boot/", bh)
	mux.Handle("/images/", imagehttp.Handler(d.blobs, log.With("component", "images")))
	apiSrv := d.api(d.jobs, log, d.reg)
	apiSrv.Register(mux)
	auth, err := authConfig(cfg.API)
	if err != nil {
		return nil, err
	}
	dash, err := web.New(web.Config{Tokens: api.NewTokens(auth.Tokens), AnonymousRead: auth.AnonymousRead, Version: version.Version},
		web.Deps{API: apiSrv, Inventory: d.inv, Catalog: d.catalog, Jobs: d.jobs, BMCs: d.bmcs, Gatherer: d.reg, Registerer: d.reg,
			Log: log.With("component", "web")})
	if err != nil {
		return nil, err
	}
	dash.Register(mux)
	d.components["web"] = dash
	metrics := promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg})
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", d.healthz)
	lim, err := httplimit.New(limitsConfig(cfg.HTTP.Limits), d.reg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	d.httpLn = lim.Listen(ln)
	newServer := func(h http.Handler, component string) *http.Server {
		return &http.Server{Handler: lim.Handler(routeClass, h), ReadHeaderTimeout: cfg.HTTP.Limits.ReadTimeout.Duration, IdleTimeout: 2 * time.Minute,
			ErrorLog: httplimit.ErrorLog(log.With("component", component), slog.LevelWarn)}
	}
	d.closers = append(d.closers, func() { d.httpLn.Close() })
	if httpsURL == nil {
		d.httpSrv = newServer(api.Authenticate(auth, mux), "http")
	} else {
		plain := http.NewServeMux()
		plain.Handle("/boot/", bh)
		plain.Handle("/images/", api.HTTPSOnly(httpsURL))
		plain.Handle("GET /metrics", metrics)
		plain.HandleFunc("GET /healthz", d.healthz)
		apiSrv.RegisterPlain(plain, httpsURL)
		plain.Handle("/{$}", web.PlainHandler(httpsURL))
		plain.Handle("/ui/", web.PlainHandler(httpsURL))
		d.httpSrv = newServer(plain, "http")
		ln, err := net.Listen("tcp", cfg.HTTP.TLS.Listen.String())
		if err != nil {
			return nil, fmt.Errorf("https: %w", err)
		}
		// The limiter counts TCP connections, under TLS: a handshake never finished holds a
		// slot until http.limits.read_timeout ends it.
		d.httpsLn = tls.NewListener(lim.Listen(ln), d.cert.ServerConfig())
		d.closers = append(d.closers, func() { d.httpsLn.Close() })
		d.httpsSrv = newServer(api.Authenticate(auth, mux), "https")
		d.httpsSrv.RegisterOnShutdown(apiSrv.CloseStreams)
		d.httpsSrv.RegisterOnShutdown(dash.CloseStreams)
	}
	if d.ctlLn, err = listenControl(cfg.HTTP.ControlSocket); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { d.ctlLn.Close() })
	d.ctlSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnContext: api.ControlConnContext,
		ErrorLog: slog.NewLogLogger(log.With("component", "control").Handler(), slog.LevelWarn)}
	d.httpSrv.RegisterOnShutdown(apiSrv.CloseStreams)
	d.ctlSrv.RegisterOnShutdown(apiSrv.CloseStreams)
	d.httpSrv.RegisterOnShutdown(dash.CloseStreams)
	d.ctlSrv.RegisterOnShutdown(dash.CloseStreams)
	return d, nil
}

// loadCert returns the HTTPS certificate: the operator's files, or the self-signed one kept in
// <state_dir>/tls (made at the first start, or anew when it no longer names this server or is
// about to expire). Its SHA-256 is logged: what an operator checks (openssl x509 -fingerprint
// -sha256) before trusting the certificate (curl --cacert <state_dir>/tls/cert.pem) or
// building an iPXE that trusts it.
func loadCert(cfg *config.File, log *slog.Logger) (*servercert.Cert, error) {
	t := cfg.HTTP.TLS
	if t.CertFile != "" {
		c, err := servercert.Load(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("http.tls.cert_file: %w", err)
		}
		log.Info("https certificate", "sha256", c.Fingerprint(), "subject", c.Leaf.Subject.String(), "expires", c.Leaf.NotAfter.Format(time.DateOnly), "file", t.CertFile)
		return c, nil
	}
	dir := filepath.Join(cfg.StateDir, "tls")
	c, made, err := servercert.LoadOrCreate(dir, certHosts(cfg), time.Now())
	if err != nil {
		return nil, fmt.Errorf("http.tls: %w", err)
	}
	switch made {
	case "":
		log.Info("https certificate (self-signed, kept)", "sha256", c.Fingerprint(), "expires", c.Leaf.NotAfter.Format(time.DateOnly), "dir", dir)
	case servercert.MadeFirst:
		log.Info("https certificate made (self-signed)", "sha256", c.Fingerprint(), "expires", c.Leaf.NotAfter.Format(time.DateOnly), "dir", dir)
	default:
		log.Warn("https certificate made anew (self-signed): clients that trusted the old one must trust this one", "sha256", c.Fingerprint(), "why", made, "dir", dir)
	}
	return c, nil
}

// certHosts are the names a self-signed certificate must carry: the provisioning address, the
// listeners' addresses and the hosts of both public URLs.
func certHosts(cfg *config.File) []string {
	var out []string
	add := func(h string) {
		if a, err := netip.ParseAddr(h); err == nil && a.IsUnspecified() || h == "" || slices.Contains(out, h) {
			return
		}
		out = append(out, h)
	}
	if a := cfg.ServerAddr(); a.IsValid() {
		add(a.String())
	}
	add(cfg.HTTP.TLS.PublicURL.Hostname())
	add(cfg.HTTP.PublicURL.Hostname())
	add(cfg.HTTP.TLS.Listen.Host)
	add(cfg.HTTP.Listen.Host)
	return out
}

// limitsConfig maps the config's http.limits onto the limiter's.
func limitsConfig(c config.HTTPLimits) httplimit.Config {
	return httplimit.Config{
		MaxConns: c.Connections, MaxConnsPerClient: c.ConnectionsPerClient,
		MaxStreams: c.EventStreams, MaxStreamsPerClient: c.EventStreamsPerClient,
		ReadTimeout: c.ReadTimeout.Duration, WriteTimeout: c.WriteTimeout.Duration, TransferStall: c.TransferStall.Duration,
	}
}

// routeClass says how long a request may hold its connection: blobs, manifests and boot assets
// are transfers (gigabytes are legitimate while they flow), the event stream is a stream, and
// everything else (the JSON APIs, boot scripts, /metrics) a request with short deadlines.
func routeClass(r *http.Request) httplimit.Class {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && (p == "/api/v1/events" || p == web.StreamPath):
		return httplimit.Stream
	case strings.HasPrefix(p, "/images/"), strings.HasPrefix(p, "/boot/assets/"):
		return httplimit.Transfer
	}
	return httplimit.Request
}

// authConfig maps the config's api section onto the API's.
func authConfig(c config.API) (api.AuthConfig, error) {
	out := api.AuthConfig{AnonymousRead: c.AnonymousRead, CORSOrigins: c.CORSOrigins}
	for _, t := range c.Tokens {
		sc, err := api.ParseScope(t.Scope)
		if err != nil {
			return out, fmt.Errorf("api.tokens %s: %w", t.Name, err)
		}
		out.Tokens = append(out.Tokens, api.Token{Name: t.Name, Scope: sc, SHA256: t.SHA256})
	}
	return out, nil
}

// listenControl binds the control socket, mode 0600. A socket file left by a daemon that died is
// replaced; one that answers belongs to a running imaged, which is an error.
func listenControl(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another imaged answers on it; stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: cannot remove the stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The peer's uid decides its scope (api.ControlConnContext); the mode keeps others out first.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func unknownProfile(cfg *config.File) string {
	if cfg.DHCP.UnknownClients == "netboot" {
		return ipxe.ProfileAgent
	}
	return ""
}

// close closes the listeners and servers, then the state they served.
func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
	if d.state != nil {
		d.state.close()
	}
}

func (d *daemon) healthz(w http.ResponseWriter, r *http.Request) {
	names := make([]string, 0, len(d.components))
	for n := range d.components {
		names = append(names, n)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"status": "ok", "version": version.Version, "components": names})
}

// run serves until ctx ends, then drains: HTTP gets a fresh bounded context for Shutdown
// (the cancelled one would cut transfers short), TFTP and DHCP drain in their own Run.
func (d *daemon) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for name, c := range d.components {
		g.Go(func() error {
			if err := c.Run(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := d.httpSrv.Serve(d.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	if d.httpsSrv != nil {
		g.Go(func() error {
			if err := d.httpsSrv.Serve(d.httpsLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("https: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := d.ctlSrv.Serve(d.ctlLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control socket: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		errs := []error{d.httpSrv.Shutdown(sctx), d.ctlSrv.Shutdown(sctx)}
		if d.httpsSrv != nil {
			errs = append(errs, d.httpsSrv.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	g.Go(func() error {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return d.inv.FlushUnknown()
			case <-t.C:
				if err := d.inv.FlushUnknown(); err != nil {
					d.log.Warn("cannot store unknown clients", "err", err)
				}
			}
		}
	})
	attrs := []any{"version", version.Version, "http", d.httpLn.Addr().String(), "control", d.cfg.HTTP.ControlSocket, "public_url", d.cfg.HTTP.PublicURL.String()}
	if d.httpsLn != nil {
		attrs = append(attrs, "https", d.httpsLn.Addr().String(), "https_url", d.cfg.HTTP.TLS.PublicURL.String(), "https_sha256", d.cert.Fingerprint())
	}
	d.log.Info("imaged serving", append(attrs, "dhcp", d.cfg.DHCP.Mode, "machines", len(d.cfg.Machines))...)
	if _, err := sdnotify.SdNotify(false, sdnotify.SdNotifyReady); err != nil {
		d.log.Warn("sd_notify", "err", err)
	}
	go func() {
		<-gctx.Done()
		sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
	}()
	err := g.Wait()
	d.log.Info("imaged stopped", "err", err)
	return err
}
