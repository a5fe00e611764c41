package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/images/imagehttp"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/boot"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/store"
	"github.com/imaged/imaged/internal/version"
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
	fmt.Fprintf(stdout, "%s: ok (dhcp %s, %d machines, boot assets in %s)\n", path, cfg.DHCP.Mode, len(cfg.Machines), cfg.Boot.AssetsDir)
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
	cfg        *config.File
	log        *slog.Logger
	st         *store.Store
	inv        *inventory.Inventory
	bmcs       *bmcs
	jobs       *jobs.Manager
	reg        *prometheus.Registry
	components map[string]component
	httpLn     net.Listener
	httpSrv    *http.Server
	ctlLn      net.Listener // the control socket
	ctlSrv     *http.Server
	closers    []func()
}

// newDaemon opens the state and constructs every component, binding every socket, so that a bad
// address or a missing file stops start-up before anything serves.
func newDaemon(cfg *config.File, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry(), components: map[string]component{}}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.st, err = store.Open(filepath.Join(cfg.StateDir, "imaged.db"), store.Options{})
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { d.st.Close() })
	if err := d.st.SyncMachines(machinesFromConfig(cfg)); err != nil {
		return nil, err
	}
	d.inv, err = inventory.New(d.st, log, cfg.Boot.TokenTTL.Duration)
	if err != nil {
		return nil, err
	}
	if err := d.reg.Register(d.inv.Collector()); err != nil {
		return nil, fmt.Errorf("inventory: metrics: %w", err)
	}
	d.bmcs, err = newBMCs(cfg, log, d.reg, d.inv.Event)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.bmcs.close)
	if d.jobs, err = newJobs(d); err != nil {
		return nil, err
	}
	d.components["jobs"] = d.jobs
	obs := &observer{inv: d.inv, jobs: d.jobs, log: log, proxy: cfg.DHCP.Mode == config.ModeProxy}
	if err := syncBootPrograms(cfg, log); err != nil {
		return nil, err
	}
	roots := []string{cfg.Boot.AssetsDir}

	bh, err := boot.New(boot.Config{
		PublicURL:      cfg.HTTP.PublicURL.URL,
		Roots:          roots,
		Agent:          boot.Agent{Kernel: cfg.Boot.Agent.Kernel, Initrd: cfg.Boot.Agent.Initrd, Cmdline: cfg.Boot.Agent.Cmdline},
		Profiles:       cfg.Boot.Profiles,
		UnknownProfile: unknownProfile(cfg),
	}, boot.Deps{Inventory: bootInventory{d.inv, d.jobs}, Tokens: bootTokens{d.inv}, Observer: obs, Log: log.With("component", "boot"), Registerer: d.reg})
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, bh.Close)
	if err := d.addNetboot(obs, roots); err != nil {
		return nil, err
	}

	blobs, err := blobstore.Open(imagesDir(cfg))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/boot/", bh)
	mux.Handle("/images/", imagehttp.Handler(blobs, log.With("component", "images")))
	apiSrv := api.New(api.Deps{Inventory: d.inv, Blobs: blobs, BMCs: d.bmcs, Jobs: jobsWithProbes{d.jobs, newMachineProbes(cfg)}, ReimageStale: cfg.Jobs.ReimageStale,
		PublicURL: cfg.HTTP.PublicURL.URL, Log: log.With("component", "api")})
	apiSrv.Register(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /healthz", d.healthz)
	d.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	auth, err := authConfig(cfg.API)
	if err != nil {
		return nil, err
	}
	d.httpSrv = &http.Server{Handler: api.Authenticate(auth, mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)}
	d.closers = append(d.closers, func() { d.httpLn.Close() })
	if d.ctlLn, err = listenControl(cfg.HTTP.ControlSocket); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { d.ctlLn.Close() })
	d.ctlSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnContext: api.ControlConnContext,
		ErrorLog: slog.NewLogLogger(log.With("component", "control").Handler(), slog.LevelWarn)}
	d.httpSrv.RegisterOnShutdown(apiSrv.CloseStreams)
	d.ctlSrv.RegisterOnShutdown(apiSrv.CloseStreams)
	return d, nil
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
		return boot.ProfileAgent
	}
	return ""
}

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
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
		return errors.Join(d.httpSrv.Shutdown(sctx), d.ctlSrv.Shutdown(sctx))
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
	d.log.Info("imaged serving", "version", version.Version, "http", d.httpLn.Addr().String(), "control", d.cfg.HTTP.ControlSocket, "public_url", d.cfg.HTTP.PublicURL.String(),
		"dhcp", d.cfg.DHCP.Mode, "machines", len(d.cfg.Machines))
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

func machinesFromConfig(cfg *config.File) []store.Machine {
	out := make([]store.Machine, 0, len(cfg.Machines))
	for _, m := range cfg.Machines {
		sm := store.Machine{ID: m.ID, Hostname: m.Hostname, Chassis: m.Chassis, Slot: m.Slot,
			WorkerGroup: m.WorkerGroup, WorkerType: m.WorkerType, BMC: m.BMC, Boot: m.Boot,
			DiskSerial: m.Disk.Serial, DiskByPath: m.Disk.ByPath}
		for _, mac := range m.MACs {
			sm.MACs = append(sm.MACs, mac.String())
		}
		if m.IP.IsValid() {
			sm.IP = m.IP.String()
		}
		out = append(out, sm)
	}
	return out
}
