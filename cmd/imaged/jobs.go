package main

import (
	"fmt"
	"time"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/inventory"
	"github.com/imaged/imaged/internal/jobs"
	"github.com/imaged/imaged/internal/machines"
)

// jobsConfig maps the config file's jobs section and the machines' own probes onto the jobs
// package's Config.
func jobsConfig(cfg *config.File) jobs.Config {
	c := cfg.Jobs
	jc := jobs.Config{AgentSilence: c.AgentSilence.Duration, PerChassis: c.PerChassis, LeaveFailedOn: c.LeaveFailedOn,
		LinkBytesPerSecond: c.LinkMbps * 1e6 / 8, MachineProbes: map[string]jobs.Probe{}}
	if c.Probe != nil {
		p := jobsProbe(*c.Probe)
		jc.DefaultProbe = &p
	}
	if len(c.Timeouts) > 0 {
		jc.Timeouts = map[jobs.Phase]time.Duration{}
		for p, d := range c.Timeouts {
			jc.Timeouts[jobs.Phase(p)] = d.Duration
		}
	}
	for _, m := range cfg.Machines {
		if m.Probe != nil {
			jc.MachineProbes[m.ID] = jobsProbe(*m.Probe)
		}
	}
	return jc
}

func jobsProbe(p config.Probe) jobs.Probe {
	return jobs.Probe{Kind: p.Kind, Port: p.Port, Path: p.Path, Status: p.Status, CheckIn: p.CheckIn}
}

// jobsCatalog is the inventory as the jobs see it.
type jobsCatalog struct{ inv *inventory.Inventory }

func (c jobsCatalog) Machine(id string) (machines.Machine, bool) { return c.inv.Machine(id) }
func (c jobsCatalog) Assign(id string, img images.Image, by string) (machines.Machine, error) {
	return c.inv.Assign(id, img, by)
}
func (c jobsCatalog) ClearCurrentImage(id string) error { return c.inv.ClearCurrentImage(id) }

func newJobs(d *daemon) (*jobs.Manager, error) {
	m, err := jobs.New(jobsConfig(d.cfg), jobs.Deps{
		Power: d.bmcs, Catalog: jobsCatalog{d.inv}, Store: d.st, Events: d.inv.Event,
		Log: d.log.With("component", "jobs"), Registerer: d.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return m, nil
}
