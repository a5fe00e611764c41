package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/power"
)

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
	af := addAPIFlags(fs, "who is making the change (recorded in the machine's events)")
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
	// Through the daemon, its BMC sessions and breakers serve, and the change lands in its event
	// log; in-process, the same API drives the BMCs with its own sessions.
	c, err := af.connect(stderr, false)
	if err != nil {
		return err
	}
	defer c.close()
	var mp api.MachinePower
	switch sub {
	case "power":
		if len(a) == 1 {
			mp, err = c.MachineBMC(ctx, a[0])
			break
		}
		act, perr := power.ParseAction(a[1])
		if perr != nil {
			return usageError{perr.Error() + "\n" + bmcUsage[sub]}
		}
		mp, err = c.Power(ctx, a[0], act)
	case "boot":
		t, perr := power.ParseBootTarget(a[1])
		if perr != nil {
			return usageError{perr.Error() + "\n" + bmcUsage[sub]}
		}
		mp, err = c.BootOnce(ctx, a[0], t, *uri)
	default:
		machine, merr := isMachine(ctx, c, a[0])
		if merr != nil {
			return merr
		}
		if !machine {
			info, err := c.BMC(ctx, a[0])
			return output(stdout, *asJSON, info, err, printSystems)
		}
		mp, err = c.MachineBMC(ctx, a[0])
	}
	return output(stdout, *asJSON, mp, err, printMachinePower)
}

// isMachine says whether id names a machine of the inventory (else, for inventory, a BMC).
func isMachine(ctx context.Context, c *conn, id string) (bool, error) {
	ms, err := c.Machines(ctx)
	return slices.ContainsFunc(ms, func(m api.MachineView) bool { return m.ID == id }), err
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
	printTable(w, "SYSTEM\tPOWER\tHEALTH\tMACS\tBOOT OVERRIDE\tMODEL", "", info.Systems, func(s api.BMCSystem) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s %s\t%s", s.ID, s.Power, dash(s.Health), dash(strings.Join(s.MACs, ",")),
			s.Boot.Enabled, s.Boot.Target, dash(strings.TrimSpace(s.Manufacturer+" "+s.Model)))
	})
}
