package main

import (
	"context"
	"fmt"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/power"
)

// jobsConfig maps the config file's jobs section onto the jobs package's Config.
func jobsConfig(c config.Jobs) jobs.Config {
	jc := jobs.Config{AgentSilence: c.AgentSilence.Duration, PerChassis: c.PerChassis, LeaveFailedOn: c.LeaveFailedOn,
		LinkBytesPerSecond: c.LinkMbps * 1e6 / 8, DefaultProbe: jobsProbe(c.Probe)}
	if len(c.Timeouts) > 0 {
		jc.Timeouts = map[jobs.Phase]time.Duration{}
		for p, d := range c.Timeouts {
			jc.Timeouts[jobs.Phase(p)] = d.Duration
		}
	}
	return jc
}

func jobsProbe(p *config.Probe) *jobs.Probe {
	if p == nil {
		return nil
	}
	return &jobs.Probe{Kind: p.Kind, Port: p.Port, Path: p.Path, Status: p.Status, CheckIn: p.CheckIn}
}

// jobsPower drives machines for the jobs through their BMCs.
type jobsPower struct{ b *bmcs }

func (p jobsPower) PowerState(ctx context.Context, machine string) (string, error) {
	sys, err := p.b.System(ctx, machine)
	return string(sys.Power), err
}
func (p jobsPower) PowerOff(ctx context.Context, machine string) error {
	return p.b.Power(ctx, machine, power.ActionOff)
}
func (p jobsPower) PowerOn(ctx context.Context, machine string) error {
	return p.b.Power(ctx, machine, power.ActionOn)
}
func (p jobsPower) BootOnce(ctx context.Context, machine, target string) error {
	t, err := power.ParseBootTarget(target)
	if err != nil {
		return err
	}
	return p.b.BootOnce(ctx, machine, t, "")
}

// jobsCatalog is the inventory as the jobs see it.
type jobsCatalog struct{ inv *inventory.Inventory }

func (c jobsCatalog) Machine(id string) (machines.Machine, bool) { return c.inv.Machine(id) }
func (c jobsCatalog) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	return c.inv.Assign(id, img, by)
}
func (c jobsCatalog) ClearCurrentImage(id string) error { return c.inv.ClearCurrentImage(id) }

// machineProbes applies machines[].probe to requests that name none.
type machineProbes map[string]*jobs.Probe

func newMachineProbes(cfg *config.File) machineProbes {
	mp := machineProbes{}
	for _, m := range cfg.Machines {
		if m.Probe != nil {
			mp[m.ID] = jobsProbe(m.Probe)
		}
	}
	return mp
}

// jobsWithProbes wraps the manager so that a request without a probe gets its machine's.
type jobsWithProbes struct {
	*jobs.Manager
	probes machineProbes
}

func (j jobsWithProbes) Submit(ctx context.Context, req jobs.Request) (jobs.Job, error) {
	if req.Probe == nil {
		req.Probe = j.probes[req.Machine]
	}
	return j.Manager.Submit(ctx, req)
}

func newJobs(d *daemon) (*jobs.Manager, error) {
	m, err := jobs.New(jobsConfig(d.cfg.Jobs), jobs.Deps{
		Power: jobsPower{d.bmcs}, Catalog: jobsCatalog{d.inv}, Store: d.st, Events: d.inv.Event,
		Log: d.log.With("component", "jobs"), Registerer: d.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return m, nil
}
