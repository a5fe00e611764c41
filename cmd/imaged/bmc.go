package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/redfish"
)

// bmcs holds one power driver per configured BMC and knows which system behind which BMC each
// machine is. The daemon keeps one for its life (sessions are reused, breakers remember); a CLI
// command without a daemon builds its own.
type bmcs struct {
	log      *slog.Logger
	drivers  map[string]bmcDriver // by bmcs[].name
	order    []string
	machines map[string]machineBMC // by machine id
	events   func(machines.Event)  // may be nil

	mu      sync.Mutex
	systems map[string]string // machine id → system id, learnt from MACs
}

// bmcDriver is a configured BMC: its driver and its config.
type bmcDriver struct {
	power.Driver
	cfg   config.BMC
	close func(ctx context.Context) error
}

type machineBMC struct {
	bmc    string
	system string // "" until learnt from the machine's MACs
	macs   []string
}

// ErrNoBMC means the machine has no bmc in the config.
var ErrNoBMC = errors.New("machine has no BMC configured (set machines[].bmc)")

// newBMCs builds a Redfish client for every configured BMC; credentials are read now, so a
// missing or world-readable file stops start-up. events may be nil.
func newBMCs(cfg *config.File, log *slog.Logger, reg prometheus.Registerer, events func(machines.Event)) (*bmcs, error) {
	b := &bmcs{log: log, drivers: map[string]bmcDriver{}, machines: map[string]machineBMC{}, events: events, systems: map[string]string{}}
	if len(cfg.BMCs) == 0 {
		return b, nil
	}
	m, err := redfish.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	for _, m := range cfg.Machines {
		if m.BMC != "" {
			mb := machineBMC{bmc: m.BMC, system: m.BMCSystem}
			for _, mac := range m.MACs {
				mb.macs = append(mb.macs, mac.String())
			}
			b.machines[m.ID] = mb
		}
	}
	for _, c := range cfg.BMCs {
		cred, err := redfish.LoadCredentials(c.Credentials)
		if err != nil {
			return nil, fmt.Errorf("bmcs %s: %w", c.Name, err)
		}
		name := c.Name
		cl, err := redfish.New(redfish.Config{
			Name: name, Endpoint: c.URL.URL, Username: cred.Username, Password: cred.Password,
			CAFile: c.CAFile, Fingerprint: c.Fingerprint, Insecure: c.Insecure,
			Timeout: c.Timeout.Duration, MaxConcurrent: c.MaxConcurrent,
			OnHealthChange: func(h power.Health) { b.healthChanged(name, h) },
		}, log.With("component", "bmc"), m)
		if err != nil {
			return nil, fmt.Errorf("bmcs %s: %w", c.Name, err)
		}
		b.drivers[name] = bmcDriver{Driver: cl, cfg: c, close: cl.Close}
		b.order = append(b.order, name)
	}
	return b, nil
}

// healthChanged logs a BMC's breaker change and puts it in the timeline of every machine behind it.
func (b *bmcs) healthChanged(name string, h power.Health) {
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
		if m.bmc == name {
			b.events(machines.Event{Machine: id, Kind: "bmc", Message: msg})
		}
	}
}

// close logs out of every BMC (their session tables are small).
func (b *bmcs) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, name := range b.order {
		if err := b.drivers[name].close(ctx); err != nil {
			b.log.Warn("BMC logout", "bmc", name, "err", err)
		}
	}
}

// driver returns the BMC of a bmcs[].name.
func (b *bmcs) driver(name string) (bmcDriver, error) {
	d, ok := b.drivers[name]
	if !ok {
		return bmcDriver{}, fmt.Errorf("no BMC named %q in the config (%s): %w", name, strings.Join(b.order, ", "), power.ErrNotFound)
	}
	return d, nil
}

// system finds machine id's BMC and its system id there: bmc_system from the config, else the
// system whose MACs include one of the machine's (learnt once).
func (b *bmcs) system(ctx context.Context, id string) (bmcDriver, string, error) {
	m, ok := b.machines[id]
	if !ok {
		return bmcDriver{}, "", fmt.Errorf("%s: %w", id, ErrNoBMC)
	}
	d, err := b.driver(m.bmc)
	if err != nil {
		return d, "", err
	}
	if m.system != "" {
		return d, m.system, nil
	}
	b.mu.Lock()
	sys, ok := b.systems[id]
	b.mu.Unlock()
	if ok {
		return d, sys, nil
	}
	all, err := d.Systems(ctx)
	if err != nil {
		return d, "", fmt.Errorf("find %s behind BMC %s: %w", id, m.bmc, err)
	}
	for _, s := range all {
		for _, mac := range s.MACs {
			if slices.Contains(m.macs, mac.String()) {
				b.mu.Lock()
				b.systems[id] = s.ID
				b.mu.Unlock()
				return d, s.ID, nil
			}
		}
	}
	return d, "", fmt.Errorf("no system behind BMC %s has one of %s's MACs (%s); set machines[].bmc_system: %w",
		m.bmc, id, strings.Join(m.macs, ", "), power.ErrNotFound)
}

// BMCName is the bmcs[].name of machine id, or "".
func (b *bmcs) BMCName(id string) string { return b.machines[id].bmc }

// System reads machine id through its BMC and checks that the BMC's MACs agree with the
// inventory's (a mismatch means the config binds the machine to the wrong system).
func (b *bmcs) System(ctx context.Context, id string) (power.System, error) {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return power.System{}, err
	}
	return d.System(ctx, sys)
}

// Power performs action on machine id and returns once its BMC reads back the resulting state.
func (b *bmcs) Power(ctx context.Context, id string, a power.Action) error {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return err
	}
	return d.Power(ctx, sys, a)
}

// BootOnce sets machine id's next boot, read back.
func (b *bmcs) BootOnce(ctx context.Context, id string, t power.BootTarget, uri string) error {
	d, sys, err := b.system(ctx, id)
	if err != nil {
		return err
	}
	return d.SetBootOnce(ctx, sys, t, uri)
}

// Systems lists what is behind BMC name.
func (b *bmcs) Systems(ctx context.Context, name string) ([]power.System, error) {
	d, err := b.driver(name)
	if err != nil {
		return nil, err
	}
	return d.Systems(ctx)
}

// Health is BMC name's breaker state, if its driver keeps one.
func (b *bmcs) Health(name string) (power.Health, bool) {
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

// Names lists the configured BMCs in config order.
func (b *bmcs) Names() []string { return b.order }
