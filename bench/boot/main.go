// Command boot measures the lab's netboot from power-on to the agent's hello, per phase, for the
// BIOS path (SeaBIOS + QEMU's iPXE ROM → HTTP) and the UEFI path (OVMF's EDK2 PXE → TFTP
// ipxe.efi → iPXE → HTTP), and prints one table of medians (min–max) over the runs.
//
//	sh scripts/build.sh && go run ./bench/boot -imaged bin/imaged -runs 3
//
// The lab takes the agent for the initramfs from beside imaged (bin/imaged-agent).
//
// Root only: it makes its own network namespaces (imaged-bench-*) and removes them.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaged/imaged/internal/lab"
)

// phases in boot order: the first row whose source and kind (and text, if set) match.
var phases = []struct{ name, source, kind, text string }{
	{"firmware banner", "console", "firmware", ""},
	{"firmware DHCP answered (UEFI PXE)", "imaged", "dhcp", "uefi-pxe"},
	{"ipxe.efi fetched over TFTP", "imaged", "tftp", ": ok"},
	{"iPXE DHCP answered", "imaged", "dhcp", "ipxe client"},
	{"script served", "imaged", "script", ""},
	{"kernel fetched", "imaged", "http", "vmlinuz"},
	{"initrd fetched", "imaged", "http", "initrd"},
	{"kernel starts", "console", "kernel starts", ""},
	{"agent starts (/init)", "console", "agent starts", ""},
	{"agent DHCP answered", "imaged", "dhcp", "dhcp client: ack"},
	{"agent hello", "imaged", "hello", ""},
}

func main() {
	imaged := flag.String("imaged", "bin/imaged", "static imaged binary (imaged-agent beside it)")
	runs := flag.Int("runs", 3, "boots per firmware")
	fws := flag.String("firmware", "bios,uefi", "firmware paths to measure")
	dir := flag.String("dir", "/var/tmp/imaged-bench-boot", "work directory")
	cache := flag.String("cache", "/var/cache/imaged-lab", "kernel package cache")
	flag.Parse()
	if err := run(*imaged, *runs, strings.Split(*fws, ","), *dir, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(imaged string, runs int, fws []string, dir, cache string) error {
	bin, err := filepath.Abs(imaged)
	if err != nil {
		return err
	}
	ctx := context.Background()
	results := map[string][]map[string]time.Duration{}
	for _, fw := range fws {
		l := lab.New(filepath.Join(dir, fw), bin, "imaged-bench", os.Stderr)
		if err := l.PrepareAssets(ctx, cache); err != nil {
			return err
		}
		if err := l.Up(); err != nil {
			return err
		}
		b := lab.Blade{ID: "ms1-c1n1", MAC: "52:54:00:99:00:11", IP: "10.99.0.11", Firmware: fw, NoROM: fw == "uefi"}
		cfg, err := l.WriteConfig(lab.Config{Mode: "server", Blades: []lab.Blade{b}, LogLevel: "info"})
		if err == nil {
			err = l.StartDaemon(ctx, cfg)
		}
		for i := 0; err == nil && i < runs; i++ {
			var got map[string]time.Duration
			got, err = boot(ctx, l, b)
			if err == nil {
				fmt.Fprintf(os.Stderr, "%s run %d: hello at %.2f s\n", fw, i+1, got["agent hello"].Seconds())
				results[fw] = append(results[fw], got)
			}
		}
		l.Close()
		if err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "phase (s since power-on)")
	for _, fw := range fws {
		fmt.Fprintf(tw, "\t%s median (min–max), %d runs", fw, len(results[fw]))
	}
	fmt.Fprintln(tw)
	for _, p := range phases {
		fmt.Fprint(tw, p.name)
		for _, fw := range fws {
			fmt.Fprintf(tw, "\t%s", stat(results[fw], p.name))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func boot(ctx context.Context, l *lab.Lab, b lab.Blade) (map[string]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	vm, err := l.Boot(ctx, b)
	if err != nil {
		return nil, err
	}
	defer vm.Stop()
	if _, err := l.WaitHello(ctx, b.ID, vm.Started(), vm); err != nil {
		return nil, err
	}
	ev, err := l.Events(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	got := map[string]time.Duration{}
	for _, r := range lab.Timeline(vm, ev) {
		for _, p := range phases {
			if _, seen := got[p.name]; !seen && r.Source == p.source && r.Kind == p.kind && strings.Contains(r.Text, p.text) {
				got[p.name] = r.At
			}
		}
	}
	return got, nil
}

func stat(rs []map[string]time.Duration, name string) string {
	var v []float64
	for _, r := range rs {
		if d, ok := r[name]; ok {
			v = append(v, d.Seconds())
		}
	}
	if len(v) == 0 {
		return "–"
	}
	sort.Float64s(v)
	return fmt.Sprintf("%.2f (%.2f–%.2f)", v[len(v)/2], v[0], v[len(v)-1])
}
