package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/images/blobstore"
	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/catalog"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power/fleet"
	"github.com/imaged/imaged/internal/store"
)

// state is what the API serves: the state file, the inventory over it, the blob store, the
// catalog over both, and the BMC fleet. The daemon builds it and its API here (newDaemon), and so
// does the CLI when no daemon runs (connect): one wiring for both.
type state struct {
	cfg     *config.File
	st      *store.Store
	inv     *inventory.Inventory
	blobs   *blobstore.Store
	catalog *catalog.Service
	bmcs    *fleet.BMCs
	closers []func()
}

type stateOptions struct {
	readOnly bool          // the CLI's reads: the state file shared, nothing written
	lockWait time.Duration // for the state file's lock; 0: the store's default
	log      *slog.Logger
	reg      prometheus.Registerer // nil: the metrics are kept but not exported
}

// openState opens the state of cfg; close releases it.
func openState(cfg *config.File, o stateOptions) (_ *state, err error) {
	s := &state{cfg: cfg}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.st, err = store.Open(filepath.Join(cfg.StateDir, "imaged.db"), store.Options{ReadOnly: o.readOnly, Timeout: o.lockWait}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.st.Close() })
	if !o.readOnly {
		// The config is the inventory's source of truth; the stored one follows it, so that a
		// machine added to the config can be assigned before the daemon has run.
		if err := s.st.SyncMachines(machinesFromConfig(cfg)); err != nil {
			return nil, err
		}
	}
	s.inv, err = inventory.New(s.st, inventory.Config{Log: o.log, TokenTTL: cfg.Boot.TokenTTL.Duration, BindToLease: cfg.DHCP.Mode == config.ModeServer})
	if err != nil {
		return nil, err
	}
	if o.reg != nil {
		if err := o.reg.Register(s.inv.Collector()); err != nil {
			return nil, fmt.Errorf("inventory: metrics: %w", err)
		}
	}
	s.bmcs, err = fleet.New(fleetConfig(cfg), fleet.Deps{Log: o.log, Registerer: o.reg, Events: func(machine, msg string) {
		s.inv.Event(machines.Event{Machine: machine, Kind: "bmc", Message: msg})
	}})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.bmcs.Close)
	if s.blobs, err = blobstore.Open(imagesDir(cfg)); err != nil {
		return nil, err
	}
	s.catalog = catalog.New(s.st, s.blobs, o.log.With("component", "catalog"))
	return s, nil
}

// imagesDir is where the blob store lives under the state directory.
func imagesDir(cfg *config.File) string { return filepath.Join(cfg.StateDir, "images") }

// api is the API over s; jobs is nil where none run (the CLI's in-process API), and so are
// the routes that need them.
func (s *state) api(jobs api.Jobs, log *slog.Logger, reg prometheus.Registerer) *api.Server {
	// With TLS (the default) the API, the agent's API and images are served on the HTTPS
	// listener only: the URLs in plans are its.
	public := s.cfg.HTTP.PublicURL.URL
	if s.cfg.TLSEnabled() {
		public = s.cfg.HTTP.TLS.PublicURL.URL
	}
	return api.New(api.Deps{Inventory: s.inv, Catalog: s.catalog, Blobs: s.blobs, BMCs: s.bmcs, Jobs: jobs, ReimageStale: s.cfg.Jobs.ReimageStale,
		PublicURL: public, Log: log.With("component", "api"), Registerer: reg})
}

func (s *state) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func machinesFromConfig(cfg *config.File) []machines.Machine {
	out := make([]machines.Machine, 0, len(cfg.Machines))
	for _, m := range cfg.Machines {
		sm := machines.Machine{ID: m.ID, Hostname: m.Hostname, Chassis: m.Chassis, Slot: m.Slot, Node: m.Node,
			WorkerGroup: m.WorkerGroup, WorkerType: m.WorkerType, BMC: m.BMC, Boot: m.Boot,
			DiskSerial: m.Disk.Serial, DiskByPath: m.Disk.ByPath}
		for _, mac := range m.MACs {
			sm.MACs = append(sm.MACs, machines.MAC(mac.HardwareAddr))
		}
		sm.IP = m.IP.Addr
		out = append(out, sm)
	}
	return out
}
