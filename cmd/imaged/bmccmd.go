package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/power"
	"github.com/imaged/imaged/internal/power/fleet"
)

// bmcClient carries out `imaged bmc …`: through the running daemon's control socket when it
// answers (its BMC sessions and breakers are reused, and the change lands in its event log), else
// with its own Redfish clients built from the config.
type bmcClient struct {
	remote *controlClient
	local  *fleet.BMCs
}

func openBMCs(cfg *config.File, by string, stderr io.Writer) (*bmcClient, error) {
	if c, err := net.DialTimeout("unix", cfg.HTTP.ControlSocket, time.Second); err == nil {
		c.Close()
		return &bmcClient{remote: newControlClient(cfg.HTTP.ControlSocket, by)}, nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := fleet.New(fleetConfig(cfg), fleet.Deps{Log: log})
	if err != nil {
		return nil, err
	}
	return &bmcClient{local: b}, nil
}

func (c *bmcClient) close() {
	if c.local != nil {
		c.local.Close()
	}
}

func (c *bmcClient) machine(ctx context.Context, id string) (api.MachinePower, error) {
	var mp api.MachinePower
	if c.remote != nil {
		return mp, c.remote.Do(ctx, "GET", "/api/v1/machines/"+url.PathEscape(id)+"/bmc", nil, &mp)
	}
	sys, err := c.local.System(ctx, id)
	if err != nil {
		return mp, err
	}
	mp = api.MachinePower{Machine: id, BMC: c.local.BMCName(id), System: api.SystemView(sys)}
	return mp, nil
}

func (c *bmcClient) power(ctx context.Context, id string, a power.Action) (api.MachinePower, error) {
	if c.remote != nil {
		var mp api.MachinePower
		return mp, c.remote.Do(ctx, "POST", "/api/v1/machines/"+url.PathEscape(id)+"/power", api.PowerRequest{Action: string(a)}, &mp)
	}
	if err := c.local.Power(ctx, id, a); err != nil {
		return api.MachinePower{}, err
	}
	return c.machine(ctx, id)
}

func (c *bmcClient) boot(ctx context.Context, id string, t power.BootTarget, uri string) (api.MachinePower, error) {
	if c.remote != nil {
		var mp api.MachinePower
		return mp, c.remote.Do(ctx, "POST", "/api/v1/machines/"+url.PathEscape(id)+"/boot", api.BootRequest{Target: string(t), URI: uri}, &mp)
	}
	if err := c.local.BootOnce(ctx, id, t, uri); err != nil {
		return api.MachinePower{}, err
	}
	return c.machine(ctx, id)
}

func (c *bmcClient) systems(ctx context.Context, name string) (api.BMCInfo, error) {
	var info api.BMCInfo
	if c.remote != nil {
		return info, c.remote.Do(ctx, "GET", "/api/v1/bmcs/"+url.PathEscape(name), nil, &info)
	}
	systems, err := c.local.Systems(ctx, name)
	if err != nil {
		return info, err
	}
	info.Name = name
	for _, s := range systems {
		info.Systems = append(info.Systems, api.SystemView(s))
	}
	return info, nil
}

var bmcUsage = map[string]string{
	"power":     "usage: imaged bmc power [flags] MACHINE [" + strings.Join(actionWords(), "|") + "]   (no action: show the power state)",
	"boot":      "usage: imaged bmc boot [flags] MACHINE pxe|disk|none|uefi-http   (-uri URL for uefi-http)",
	"inventory": "usage: imaged bmc inventory [flags] MACHINE|BMC",
}

func actionWords() []string {
	var out []string
	for _, a := range power.Actions {
		out = append(out, string(a))
	}
	return out
}

func cmdBMC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "bmc", "power", "boot", "inventory")
	if err != nil {
		return err
	}
	fs := newFlags("bmc "+sub, stderr)
	path := configFlag(fs)
	by := fs.String("by", operator(), "who is making the change (recorded in the machine's events)")
	asJSON := fs.Bool("json", false, "print JSON")
	var uri *string
	if sub == "boot" {
		uri = fs.String("uri", "", "the boot URL for uefi-http")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	a := fs.Args()
	if n := len(a); n < 1 || (sub == "power" && n > 2) || (sub == "boot" && n != 2) || (sub == "inventory" && n != 1) {
		return usageError{bmcUsage[sub]}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	c, err := openBMCs(cfg, *by, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	var mp api.MachinePower
	switch sub {
	case "power":
		if len(a) == 1 {
			mp, err = c.machine(ctx, a[0])
			break
		}
		act, perr := power.ParseAction(a[1])
		if perr != nil {
			return usageError{perr.Error() + "\n" + bmcUsage[sub]}
		}
		mp, err = c.power(ctx, a[0], act)
	case "boot":
		t, perr := power.ParseBootTarget(a[1])
		if perr != nil {
			return usageError{perr.Error() + "\n" + bmcUsage[sub]}
		}
		mp, err = c.boot(ctx, a[0], t, *uri)
	default:
		if !isMachine(cfg, a[0]) {
			info, err := c.systems(ctx, a[0])
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(stdout, info)
			}
			printSystems(stdout, info)
			return nil
		}
		mp, err = c.machine(ctx, a[0])
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, mp)
	}
	printMachinePower(stdout, mp)
	return nil
}

func isMachine(cfg *config.File, id string) bool {
	for _, m := range cfg.Machines {
		if m.ID == id {
			return true
		}
	}
	return false
}

func printMachinePower(w io.Writer, mp api.MachinePower) {
	s := mp.System
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s (BMC %s, system %s)\n", mp.Machine, mp.BMC, s.ID)
	fmt.Fprintf(tw, "power\t%s\n", s.Power)
	fmt.Fprintf(tw, "health\t%s\n", dash(s.Health))
	fmt.Fprintf(tw, "model\t%s\n", dash(strings.TrimSpace(s.Manufacturer+" "+s.Model)))
	fmt.Fprintf(tw, "serial\t%s\n", dash(s.SerialNumber))
	fmt.Fprintf(tw, "macs\t%s\n", dash(strings.Join(s.MACs, ", ")))
	boot := s.Boot.Enabled + ": " + s.Boot.Target
	if s.Boot.URI != "" {
		boot += " " + s.Boot.URI
	}
	if s.Boot.Mode != "" {
		boot += " (" + s.Boot.Mode + ")"
	}
	fmt.Fprintf(tw, "boot override\t%s\n", boot)
	fmt.Fprintf(tw, "reset types\t%s\n", dash(strings.Join(s.ResetTypes, ", ")))
	if h := mp.Health; h != nil {
		fmt.Fprintf(tw, "bmc\t%s\n", healthWord(h))
	}
	tw.Flush()
}

func healthWord(h *api.BMCHealth) string {
	if h == nil {
		return "-"
	}
	if h.Degraded {
		return fmt.Sprintf("DEGRADED (%d failures; last: %s)", h.Failures, h.LastError)
	}
	if h.Failures > 0 {
		return fmt.Sprintf("ok (%d recent failures)", h.Failures)
	}
	return "ok"
}

func printSystems(w io.Writer, info api.BMCInfo) {
	fmt.Fprintf(w, "BMC %s: %d systems", info.Name, len(info.Systems))
	if info.Health != nil {
		fmt.Fprintf(w, ", %s", healthWord(info.Health))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SYSTEM\tPOWER\tHEALTH\tMACS\tBOOT OVERRIDE\tMODEL")
	for _, s := range info.Systems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s %s\t%s\n", s.ID, s.Power, dash(s.Health), dash(strings.Join(s.MACs, ",")),
			s.Boot.Enabled, s.Boot.Target, dash(strings.TrimSpace(s.Manufacturer+" "+s.Model)))
	}
	tw.Flush()
}
