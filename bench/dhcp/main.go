// Command dhcp-bench-server runs imaged's DHCP server (internal/dhcp) in server mode on its own,
// for bench/dhcp/run.sh: every client is unknown and, with the "lease" policy, gets an address
// from the pool; leases are persisted in a bbolt state file through internal/store (db.Batch,
// one fsync per batch). It serves until SIGINT or SIGTERM, then drains.
//
//	dhcp-bench-server -iface veth-s -ip 10.98.0.1 -subnet 10.98.0.0/16 \
//	    -pool 10.98.1.0-10.98.255.254 -state FILE [-workers N] [-cpuprofile FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"

	"github.com/imaged/imaged/internal/dhcp"
	"github.com/imaged/imaged/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dhcp-bench-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("dhcp-bench-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	iface := fs.String("iface", "", "interface to serve")
	ip := fs.String("ip", "", "our address on the interface")
	subnet := fs.String("subnet", "", "subnet served")
	pool := fs.String("pool", "", "dynamic pool FIRST-LAST")
	state := fs.String("state", "", "bbolt state file for the leases")
	workers := fs.Int("workers", 0, "packet workers (0: the package default)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *iface == "" || *ip == "" || *subnet == "" || *pool == "" || *state == "" {
		return errors.New("-iface, -ip, -subnet, -pool and -state are required")
	}
	first, last, ok := strings.Cut(*pool, "-")
	if !ok {
		return fmt.Errorf("-pool %q: want FIRST-LAST", *pool)
	}
	cfg := dhcp.Config{Mode: dhcp.ModeServer, Interface: *iface, Unknown: dhcp.UnknownLease, Workers: *workers}
	var err error
	if cfg.ServerIP, err = netip.ParseAddr(*ip); err != nil {
		return err
	}
	if cfg.Subnet, err = netip.ParsePrefix(*subnet); err != nil {
		return err
	}
	if cfg.PoolStart, err = netip.ParseAddr(first); err != nil {
		return err
	}
	if cfg.PoolEnd, err = netip.ParseAddr(last); err != nil {
		return err
	}
	st, err := store.Open(*state, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	srv, err := dhcp.New(cfg, dhcp.Deps{Leases: leases{st}, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	err = srv.Run(ctx)
	// One line of imaged_dhcp_packets_total, type/disposition=count, for run.sh.
	var counts []string
	if mfs, gerr := reg.Gather(); gerr == nil {
		for _, mf := range mfs {
			if mf.GetName() != "imaged_dhcp_packets_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if v := m.GetCounter().GetValue(); v > 0 {
					counts = append(counts, fmt.Sprintf("%s/%s=%.0f", l["type"], l["disposition"], v))
				}
			}
		}
	}
	sort.Strings(counts)
	fmt.Fprintln(stderr, "packets:", strings.Join(counts, " "))
	return err
}

// leases adapts the state file to dhcp.LeaseStore, as cmd/imaged does.
type leases struct{ st *store.Store }

func (l leases) Leases() ([]dhcp.Lease, error) {
	ls, err := l.st.Leases()
	if err != nil {
		return nil, err
	}
	out := make([]dhcp.Lease, 0, len(ls))
	for _, s := range ls {
		mac, err := net.ParseMAC(s.MAC)
		if err != nil {
			continue
		}
		a, err := netip.ParseAddr(s.Addr)
		if err != nil {
			continue
		}
		out = append(out, dhcp.Lease{MAC: mac, Addr: a, Expiry: s.Expiry, Hostname: s.Hostname, State: s.State})
	}
	return out, nil
}

func (l leases) PutLease(d dhcp.Lease) error {
	return l.st.PutLease(store.Lease{MAC: d.MAC.String(), Addr: d.Addr.String(), Expiry: d.Expiry,
		Hostname: d.Hostname, State: d.State})
}

func (l leases) DeleteLease(mac net.HardwareAddr) error { return l.st.DeleteLease(mac.String()) }
