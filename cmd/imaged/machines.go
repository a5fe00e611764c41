package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/machines"
)

func cmdMachines(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "machines", "list", "unknown", "events", "assign", "reimage", "reboot")
	if err != nil {
		return err
	}
	switch sub {
	case "assign":
		return cmdAssign(ctx, rest, stdout, stderr)
	case "reimage", "reboot":
		return cmdReimage(ctx, sub, rest, stdout, stderr)
	}
	fs := newFlags("machines "+sub, stderr)
	af := addAPIFlags(fs, "")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if sub == "events" && fs.NArg() != 1 {
		return usageError{"usage: imaged machines events [flags] MACHINE_ID"}
	}
	c, err := af.connect(stderr, true)
	if err != nil {
		return err
	}
	defer c.close()
	switch sub {
	case "list":
		ms, err := c.Machines(ctx)
		return output(stdout, *asJSON, ms, err, printMachines)
	case "unknown":
		us, err := c.UnknownClients(ctx)
		return output(stdout, *asJSON, us, err, printUnknown)
	default:
		ev, err := c.MachineEvents(ctx, fs.Arg(0))
		return output(stdout, *asJSON, ev, err, printTimeline)
	}
}

func printMachines(w io.Writer, ms []api.MachineView) {
	printTable(w, "ID\tMACS\tIP\tCHASSIS\tSLOT\tGROUP\tTYPE\tBOOT\tBMC\tLAST HELLO", "", ms, func(m api.MachineView) string {
		hello := "-"
		if m.LastHello != nil {
			hello = fmt.Sprintf("%s from %s", m.LastHello.Time.Local().Format(time.DateTime), m.LastHello.IP)
		}
		bmc := dash(m.BMC)
		if m.BMCHealth != nil {
			bmc += " " + healthWord(m.BMCHealth)
		}
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s", m.ID, joinText(m.MACs, ","), dash(text(m.IP)), dash(m.Chassis), m.Slot,
			dash(m.WorkerGroup), dash(m.WorkerType), m.Boot, bmc, hello)
	})
}

func printUnknown(w io.Writer, us []machines.Unknown) {
	printTable(w, "MAC\tCLIENT\tARCH\tCOUNT\tFIRST SEEN\tLAST SEEN", "(none seen)", us, func(u machines.Unknown) string {
		return fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%s", u.MAC, dash(u.Client), u.Arch, u.Count,
			u.FirstSeen.Local().Format(time.DateTime), u.LastSeen.Local().Format(time.DateTime))
	})
}

// printTimeline prints events with the time since the first one, like a boot log.
func printTimeline(w io.Writer, ev []machines.Event) {
	if len(ev) == 0 {
		fmt.Fprintln(w, "(no events)")
		return
	}
	printTable(w, "TIME\t+SECONDS\tKIND\tEVENT", "", ev, func(e machines.Event) string {
		return fmt.Sprintf("%s\t%+8.3f\t%s\t%s", e.Time.Local().Format("15:04:05.000"), e.Time.Sub(ev[0].Time).Seconds(), e.Kind, e.Message)
	})
}

// cmdAssign sets the image a machine is to run. The agent writes it the next time the machine
// netboots into the agent profile.
func cmdAssign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("machines assign", stderr)
	af := addAPIFlags(fs, "who is making the change (recorded in the machine's events)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError{"usage: imaged machines assign [flags] MACHINE_ID NAME@VERSION|NAME@CHANNEL|sha256:DIGEST"}
	}
	ref, err := parseImageRef(fs.Arg(1))
	if err != nil {
		return err
	}
	c, err := af.connect(stderr, false)
	if err != nil {
		return err
	}
	defer c.close()
	rep, err := c.Assign(ctx, fs.Arg(0), ref)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is assigned %s (%s)", fs.Arg(0), rep.Image.Ref(), rep.Image.Digest)
	if rep.Image.Channel != "" {
		fmt.Fprintf(stdout, " and follows %s", rep.Image.Channel)
	}
	fmt.Fprintln(stdout)
	return nil
}
