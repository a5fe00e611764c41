package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// DemoOptions configure Demo.
type DemoOptions struct {
	Dir      string // work directory (config, state, assets, logs)
	CacheDir string // where Debian's kernel package is kept between runs
	Imaged   string // the static imaged binary
	Firmware string // bios or uefi
	Keep     bool   // leave the lab up until ctx ends, for a person to explore
}

// Demo netboots one blade end to end: network namespaces, imaged in server mode, a QEMU blade
// that PXE boots imaged's agent, and the agent's hello. It prints the blade's timeline.
func Demo(ctx context.Context, o DemoOptions, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: the demo creates network namespaces and needs root")
	}
	if o.Firmware == "" {
		o.Firmware = "bios"
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	l := New(o.Dir, o.Imaged, "imaged-lab", out)
	if err := l.PrepareAssets(ctx, o.CacheDir); err != nil {
		return err
	}
	if err := l.Up(); err != nil {
		return err
	}
	defer l.Close()
	blade := Blade{ID: "ms1-c1n1", MAC: "52:54:00:99:00:11", IP: "10.99.0.11", Firmware: o.Firmware}
	if o.Firmware == "uefi" {
		blade.NoROM = true // OVMF's own PXE client: DHCP → TFTP ipxe.efi → iPXE → HTTP
	}
	cfg, err := l.WriteConfig(Config{Mode: "server", Blades: []Blade{blade}})
	if err != nil {
		return err
	}
	if err := l.StartDaemon(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab: imaged serves DHCP, TFTP and HTTP on %s in namespace %s (config %s)\n", ServerIP, l.Net.Srv(), cfg)
	fmt.Fprintf(out, "lab: powering on blade %s (%s firmware, MAC %s); its console goes to %s\n", blade.ID, o.Firmware, blade.MAC, filepath.Join(o.Dir, blade.ID+".log"))
	bctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	vm, err := l.Boot(bctx, blade)
	if err != nil {
		return err
	}
	defer vm.Stop()
	m, err := l.WaitHello(bctx, blade.ID, vm.Started(), vm)
	if err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // let the console line of the accepted hello arrive
	ev, err := l.Events(ctx, blade.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nlab: %s netbooted imaged's agent, which said hello from %s after %.1f s. Timeline since power-on:\n\n",
		blade.ID, m.LastHello.IP, m.LastHello.Time.Sub(vm.Started()).Seconds())
	PrintTimeline(out, Timeline(vm, ev))
	if o.Keep {
		fmt.Fprintf(out, "\nlab: left up. Explore with, for example:\n"+
			"  ip netns exec %s curl -s --cacert %s %s/api/v1/machines\n"+
			"  ip netns exec %s curl -s %s/metrics | grep ^imaged_\n"+
			"Press Ctrl-C to tear the lab down.\n", l.Net.Srv(), CertFile(o.Dir), HTTPSURL(), l.Net.Srv(), BaseURL())
		<-ctx.Done()
	}
	return nil
}
