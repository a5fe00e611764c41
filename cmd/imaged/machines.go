package main

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/api"
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/machines"
	"github.com/imaged/imaged/internal/store"
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
	path := configFlag(fs)
	server := fs.String("server", "", "query this running daemon's URL instead of the state file (default: its control socket when it holds the state file)")
	token := fs.String("token", os.Getenv("IMAGED_TOKEN"), "API token for -server (also $IMAGED_TOKEN)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if sub == "events" && fs.NArg() != 1 {
		return usageError{"usage: imaged machines events [flags] MACHINE_ID"}
	}
	src, err := openSource(ctx, *path, *server, *token)
	if err != nil {
		return err
	}
	defer src.close()
	switch sub {
	case "list":
		ms, err := src.machines()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, ms)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMACS\tIP\tCHASSIS\tSLOT\tGROUP\tTYPE\tBOOT\tBMC\tLAST HELLO")
		for _, m := range ms {
			hello := "-"
			if m.LastHello != nil {
				hello = fmt.Sprintf("%s from %s", m.LastHello.Time.Local().Format(time.DateTime), m.LastHello.IP)
			}
			bmc := dash(m.BMC)
			if m.BMCHealth != nil {
				bmc += " " + healthWord(m.BMCHealth)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, joinText(m.MACs, ","), dash(text(m.IP)), dash(m.Chassis), m.Slot,
				dash(m.WorkerGroup), dash(m.WorkerType), m.Boot, bmc, hello)
		}
		return tw.Flush()
	case "unknown":
		us, err := src.unknown()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, us)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MAC\tCLIENT\tARCH\tCOUNT\tFIRST SEEN\tLAST SEEN")
		for _, u := range us {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", u.MAC, dash(u.Client), u.Arch, u.Count,
				u.FirstSeen.Local().Format(time.DateTime), u.LastSeen.Local().Format(time.DateTime))
		}
		if len(us) == 0 {
			fmt.Fprintln(tw, "(none seen)")
		}
		return tw.Flush()
	default:
		ev, err := src.events(fs.Arg(0))
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, ev)
		}
		printTimeline(stdout, ev)
		return nil
	}
}

// printTimeline prints events with the time since the first one, like a boot log.
func printTimeline(w io.Writer, ev []machines.Event) {
	if len(ev) == 0 {
		fmt.Fprintln(w, "(no events)")
		return
	}
	t0 := ev[0].Time
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\t+SECONDS\tKIND\tEVENT")
	for _, e := range ev {
		fmt.Fprintf(tw, "%s\t%+8.3f\t%s\t%s\n", e.Time.Local().Format("15:04:05.000"), e.Time.Sub(t0).Seconds(), e.Kind, e.Message)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// text is v's text (a MAC, an address, a digest): what JSON shows, "" for none (where a zero
// netip.Addr would print "invalid IP").
func text(v encoding.TextMarshaler) string {
	b, _ := v.MarshalText()
	return string(b)
}

func joinText[T encoding.TextMarshaler](vs []T, sep string) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = text(v)
	}
	return strings.Join(s, sep)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// source reads the inventory from the state file, or from the running daemon that holds it.
type source struct {
	st     *store.Store
	remote *api.Client
	ctx    context.Context
}

func openSource(ctx context.Context, cfgPath, server, token string) (*source, error) {
	if server == "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		st, err := store.Open(filepath.Join(cfg.StateDir, "imaged.db"), store.Options{ReadOnly: true, Timeout: 300 * time.Millisecond})
		if err == nil {
			return &source{st: st}, nil
		}
		if !errors.Is(err, store.ErrLocked) {
			return nil, err
		}
		// The daemon holds the state file: ask it over its control socket.
		return &source{remote: newControlClient(cfg.HTTP.ControlSocket, ""), ctx: ctx}, nil
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, usageError{fmt.Sprintf("-server %q is not a URL like http://10.99.0.1:8080", server)}
	}
	return &source{remote: api.NewClient(u, token, ""), ctx: ctx}, nil
}

func (s *source) close() {
	if s.st != nil {
		s.st.Close()
	}
}

func (s *source) machines() ([]api.MachineView, error) {
	if s.st != nil {
		ms, err := s.st.Machines()
		out := make([]api.MachineView, 0, len(ms))
		for _, m := range ms {
			out = append(out, api.MachineView{Machine: m})
		}
		return out, err
	}
	return s.remote.Machines(s.ctx)
}

func (s *source) unknown() ([]machines.Unknown, error) {
	if s.st != nil {
		return s.st.Unknowns()
	}
	return s.remote.UnknownClients(s.ctx)
}

func (s *source) events(id string) ([]machines.Event, error) {
	if s.st != nil {
		if _, err := s.st.Machine(id); err != nil {
			return nil, err
		}
		return s.st.Events(id, 0)
	}
	return s.remote.MachineEvents(s.ctx, id)
}

// cmdAssign sets the image a machine is to run. The agent writes it the next time the machine
// netboots into the agent profile.
func cmdAssign(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("machines assign", stderr)
	path := configFlag(fs)
	by := fs.String("by", operator(), "who is making the change (recorded in the machine's events)")
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
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	c, err := openCatalog(cfg, false, *by)
	if err != nil {
		return err
	}
	defer c.close()
	rep, err := c.assign(ctx, fs.Arg(0), ref)
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
