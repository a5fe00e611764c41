// Package fleet is imaged's set of power controllers: one driver per configured BMC, kept for
// the life of its owner (the daemon's sessions are reused and its breakers remember), and which
// system behind which BMC each machine is, from the config or learnt from the machine's MACs.
// The API, the reimage jobs and the `imaged bmc` command drive machines through it by their
// inventory id; a controller whose health changes is logged and put in the timeline of every
// machine behind it.
//
// It builds the drivers (internal/redfish today; a chassis manager's driver goes beside it) and
// knows nothing of the store, the API or the jobs: cmd/imaged maps the config onto Config and
// wires the events. The agent must never import it (it pulls in gofish).
package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/redfish"
)

// ErrNoBMC means the machine has no BMC in the config.
var ErrNoBMC = errors.New("machine has no BMC configured (set machines[].bmc)")

// Config is the controllers and the machines behind them.
type Config struct {
	BMCs []BMC
	// Machines are every machine of the inventory, those without a BMC too (they get ErrNoBMC
	// rather than "no such machine").
	Machines []Machine
}

// BMC is one power controller and how to reach it. Exactly one driver's settings are set.
type BMC struct {
	Name string // what Machine.BMC refers to
	// Credentials is a file of "username:" and "password:" lines (redfish.LoadCredentials); ""
	// reads $IMAGED_BMC_USERNAME and $IMAGED_BMC_PASSWORD. It is read by New.
	Credentials string
	// Redfish is a Redfish service's connection; its Name, Username, Password and
	// OnHealthChange are set by New.
	Redfish *redfish.Config
}

// Machine is where one machine's power is controlled.
type Machine struct {
	ID  string
	BMC string // a BMC.Name, or "" for none
	// System is the machine's system id behind its BMC; "" finds it by MACs (once).
	System string
	MACs   []net.HardwareAddr
}

// Deps are the fleet's collaborators; all may be nil.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer // the drivers' metrics
	// Events receives a line for the timeline of each machine behind a BMC whose health
	// changed. It is called on the goroutine of the call that changed it and must not block.
	Events func(machine, message string)
}

// BMCs drives machines through their BMCs. It is safe for concurrent use.
type BMCs struct {
	log      *slog.Logger
	events   func(machine, message string)
	drivers  map[string]driver // by BMC.Name
	order    []string
	machines map[string]Machine // by id

	mu      sync.Mutex
	systems map[string]string // machine id → system id, learnt from MACs
}

// driver is a BMC's power driver and how to end its session.
type driver struct {
	power.Driver
	close func(ctx context.Context) error
}

// New builds a driver for every BMC. Credentials are read now, so that a missing or
// world-readable file stops start-up; no BMC is called until it is used.
func New(cfg Config, d Deps) (*BMCs, error) {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	b := &BMCs{log: d.Log, events: d.Events, drivers: map[string]driver{}, machines: map[string]Machine{}, systems: map[string]string{}}
	for _, m := range cfg.Machines {
		b.machines[m.ID] = m
	}
	if len(cfg.BMCs) == 0 {
		return b, nil
	}
	reg := d.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	met, err := redfish.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	for _, c := range cfg.BMCs {
		if _, dup := b.drivers[c.Name]; dup {
			return nil, fmt.Errorf("bmcs %s: the name appears twice", c.Name)
		}
		if c.Redfish == nil {
			return nil, fmt.Errorf("bmcs %s: no driver configured", c.Name)
		}
		cred, err := redfish.LoadCredentials(c.Credentials)
		if err != nil {
			return nil, fmt.Errorf("bmcs %s: %w", c.Name, err)
		}
		name := c.Name
		rc := *c.Redfish
		rc.Name, rc.Username, rc.Password = name, cred.Username, cred.Password
		rc.OnHealthChange = func(h power.Health) { b.healthChanged(name, h) }
		cl, err := redfish.New(rc, d.Log.With("component", "bmc"), met)
		if err != nil {
			return nil, fmt.Errorf("bmcs %s: %w", c.Name, err)
		}
		b.drivers[name] = driver{Driver: cl, close: cl.Close}
		b.order = append(b.order, name)
	}
	return b, nil
}

// healthChanged logs a BMC's breaker change and puts it in the timeline of every machine behind it.
func (b *BMCs) healthChanged(name string, h power.Health) {
	msg := fmt.Sprintf("BMC %s is healthy again", name)
	if h.Degraded {
		msg = fmt.Sprintf("BMC %s is DEGRADED after %d failed calls (last: %s); calls fail fast for a while", name, h.Failures, h.LastError)
		b.log.Warn("BMC degraded", "bmc", name, "failures", h.Failures, "last_error", h.LastError)
	} else {
		b.log.Info("BMC healthy again", "bmc", name)
	}
	if b.events == nil {
		return
	}
	for id, m := range b.machines {
		if m.BMC == name {
			b.events(id, msg)
		}
	}
}

// Close logs out of every BMC (their session tables are small), within 5 s in all.
func (b *BMCs) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, name := range b.order {
		if err := b.drivers[name].close(ctx); err != nil {
			b.log.Warn("BMC logout", "bmc", name, "err", err)
		}
	}
}

// driver returns the BMC of a BMC.Name.
func (b *BMCs) driver(name string) (driver, error) {
	d, ok := b.drivers[name]
	if !ok {
		return driver{}, fmt.Errorf("no BMC named %q in the config (%s): %w", name, strings.Join(b.order, ", "), power.ErrNotFound)
	}
	return d, nil
}

// system finds machine id's BMC and its system id there: Machine.System when set (taken as
// configured: nothing compares its MACs with the machine's), else the system whose MACs
// include one of the machine's, learnt once.
func (b *BMCs) system(ctx context.Context, id string) (driver, string, error) {
	m, ok := b.machines[id]
	switch {
	case !ok:
		return driver{}, "", fmt.Errorf("no machine %q in the config: %w", id, power.ErrNotFound)
	case m.BMC == "":
		return driver{}, "", fmt.Errorf("%s: %w", id, ErrNoBMC)
	}
	d, err := b.driver(m.BMC)
	if err != nil {
		return d, "", err
	}
	if m.System != "" {
		return d, m.System, nil
	}
	b.mu.Lock()
	sys, ok := b.systems[id]
	b.mu.Unlock()
	if ok {
		return d, sys, nil
	}
	all, err := d.Systems(ctx)
	if err != nil {
		return d, "", fmt.Errorf("find %s behind BMC %s: %w", id, m.BMC, err)
	}
	for _, s := range all {
		for _, mac := range s.MACs {
			for _, own := range m.MACs {
				if bytes.Equal(mac, own) {
					b.mu.Lock()
					b.systems[id] = s.ID
					b.mu.Unlock()
					return d, s.ID, nil
				}
			}
		}
	}
	macs := make([]string, len(m.MACs))
	for i, mac := range m.MACs {
		macs[i] = mac.String()
	}
	return d, "", fmt.Errorf("no system behind BMC %s has one of %s's MACs (%s); set machines[].bmc_system: %w",
		m.BMC, id, strings.Join(macs, ", "), power.ErrNotFound)
}

// BMCName is the BMC.Name of machine id, or "".
func (b *BMCs) BMCName(id string) string { return b.machines[id].BMC }

// System reads machine id through its BMC.
func (b *BMCs) System(ctx context.Context, id string) (power.System, error) {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return power.System{}, err
	}
	return d.System(ctx, sys)
}

// PowerState is machine id's power state as its BMC reads it now.
func (b *BMCs) PowerState(ctx context.Context, id string) (power.State, error) {
	s, err := b.System(ctx, id)
	return s.Power, err
}

// Power performs action on machine id and returns once its BMC reads back the resulting state.
func (b *BMCs) Power(ctx context.Context, id string, a power.Action) error {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return err
	}
	return d.Power(ctx, sys, a)
}

// BootOnce sets machine id's next boot, read back; uri is the URL for power.UefiHttp only.
func (b *BMCs) BootOnce(ctx context.Context, id string, t power.BootTarget, uri string) error {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return err
	}
	return d.SetBootOnce(ctx, sys, t, uri)
}

// Systems lists what is behind BMC name.
func (b *BMCs) Systems(ctx context.Context, name string) ([]power.System, error) {
	d, err := b.driver(name)
	if err != nil {
		return nil, err
	}
	return d.Systems(ctx)
}

// Health is BMC name's breaker state, if its driver keeps one.
func (b *BMCs) Health(name string) (power.Health, bool) {
	d, ok := b.drivers[name]
	if !ok {
		return power.Health{}, false
	}
	hr, ok := d.Driver.(power.HealthReporter)
	if !ok {
		return power.Health{}, false
	}
	return hr.Health(), true
}

// Names lists the BMCs in config order.
func (b *BMCs) Names() []string { return b.order }
