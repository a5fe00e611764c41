package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/jobs"
)

// Jobs run inside the daemon: these commands talk to it (its control socket, or -server); the
// in-process API says that none run there.

func cmdJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "jobs", "list", "show", "cancel")
	if err != nil {
		return err
	}
	fs := newFlags("jobs "+sub, stderr)
	af := addAPIFlags(fs, "who is making the change (recorded in the job)")
	asJSON := fs.Bool("json", false, "print JSON")
	var machine *string
	var active *bool
	if sub == "list" {
		machine = fs.String("machine", "", "only this machine's jobs")
		active = fs.Bool("active", false, "only unfinished jobs")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if (sub == "list") != (fs.NArg() == 0) || fs.NArg() > 1 {
		return usageError{map[string]string{"list": "usage: imaged jobs list [flags]", "show": "usage: imaged jobs show [flags] JOB_ID",
			"cancel": "usage: imaged jobs cancel [flags] JOB_ID"}[sub]}
	}
	c, err := af.connect(stderr, true)
	if err != nil {
		return err
	}
	defer c.close()
	switch sub {
	case "list":
		js, err := c.Jobs(ctx, jobs.Filter{Machine: *machine, Active: *active})
		return output(stdout, *asJSON, js, c.daemonOnly(err), printJobs)
	case "show":
		j, err := c.Job(ctx, fs.Arg(0))
		return output(stdout, *asJSON, j, c.daemonOnly(err), printJob)
	default:
		j, err := c.CancelJob(ctx, fs.Arg(0))
		if err != nil {
			return c.daemonOnly(err)
		}
		fmt.Fprintf(stdout, "job %s on %s: %s (%s)\n", j.ID, j.Machine, j.State, j.Phase)
		return nil
	}
}

func printJobs(w io.Writer, js []jobs.Job) {
	printTable(w, "JOB\tKIND\tMACHINE\tIMAGE\tSTATE\tPHASE\tCREATED\tREASON", "(no jobs)", js, func(j jobs.Job) string {
		img := "-"
		if j.Image != nil {
			img = j.Image.Ref().String()
		}
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", j.ID, j.Kind, j.Machine, img, j.State, j.Phase,
			j.Created.Local().Format(time.DateTime), dash(j.Reason))
	})
}

// printJob prints a job and its timeline, each phase with how long it took.
func printJob(w io.Writer, j jobs.Job) {
	img := ""
	if j.Image != nil {
		img = fmt.Sprintf(" %s (%s)", j.Image.Ref(), j.Image.Digest)
	}
	fmt.Fprintf(w, "job %s: %s of %s%s, by %s\n", j.ID, j.Kind, j.Machine, img, dash(j.By))
	fmt.Fprintf(w, "state %s, phase %s", j.State, j.Phase)
	if j.Reason != "" {
		fmt.Fprintf(w, ": %s", j.Reason)
	}
	fmt.Fprintln(w)
	if len(j.Phases) > 0 {
		printTable(w, "PHASE\tSTARTED\tSECONDS", "", j.Phases, func(p jobs.PhaseTime) string {
			secs := "…"
			if !p.End.IsZero() {
				secs = fmt.Sprintf("%.1f", p.End.Sub(p.Start).Seconds())
			}
			return fmt.Sprintf("%s\t%s\t%s", p.Phase, p.Start.Local().Format("15:04:05.000"), secs)
		})
	}
	if len(j.Timeline) > 0 {
		fmt.Fprintln(w, "timeline:")
		t0 := j.Created
		for _, l := range j.Timeline {
			fmt.Fprintf(w, "  %+8.1fs  %-12s %s\n", l.Time.Sub(t0).Seconds(), l.Phase, l.Message)
		}
	}
}

// cmdReimage submits a reimage (or reboot) job through the daemon and, with -wait, follows it.
func cmdReimage(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("machines "+kind, stderr)
	af := addAPIFlags(fs, "who is asking (recorded in the job)")
	wait := fs.Bool("wait", false, "follow the job until it ends; exit status 1 unless it succeeded")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	want := map[string]int{"reimage": 2, "reboot": 1}[kind]
	if fs.NArg() != want {
		return usageError{map[string]string{"reimage": "usage: imaged machines reimage [flags] MACHINE_ID NAME@CHANNEL|NAME@VERSION|sha256:DIGEST",
			"reboot": "usage: imaged machines reboot [flags] MACHINE_ID"}[kind]}
	}
	c, err := af.connect(stderr, true)
	if err != nil {
		return err
	}
	defer c.close()
	var j jobs.Job
	if kind == "reimage" {
		j, err = c.Reimage(ctx, fs.Arg(0), api.ReimageRequest{Image: fs.Arg(1)})
	} else {
		j, err = c.Reboot(ctx, fs.Arg(0), api.RebootRequest{})
	}
	if err != nil {
		return c.daemonOnly(err)
	}
	fmt.Fprintf(stdout, "job %s: %s of %s submitted (imaged jobs show %s)\n", j.ID, kind, j.Machine, j.ID)
	if !*wait {
		return nil
	}
	last := ""
	for {
		if j, err = c.Job(ctx, j.ID); err != nil {
			return err
		}
		if now := string(j.State) + " " + string(j.Phase); now != last {
			fmt.Fprintf(stdout, "%s  %s\n", time.Now().Format("15:04:05"), strings.TrimSpace(now+progressNote(j)))
			last = now
		}
		if j.State.Done() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	printJob(stdout, j)
	if j.State != jobs.StateSucceeded {
		return fmt.Errorf("job %s %s in phase %s: %s", j.ID, j.State, j.Phase, j.Reason)
	}
	return nil
}

func progressNote(j jobs.Job) string {
	if j.Progress == nil || j.Phase != jobs.PhaseWriting {
		return ""
	}
	return fmt.Sprintf(" (%d of %d bytes)", j.Progress.BytesDone, j.Progress.BytesTotal)
}
