package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/imaged/imaged/internal/lab"
)

const defaultLabDir = "/var/tmp/imaged-lab"

func cmdLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, rest, err := subcommand(args, "lab", "demo", "netboot", "up", "down", "status", "bmc")
	if err != nil {
		return err
	}
	fs := newFlags("lab "+sub, stderr)
	dir := fs.String("dir", defaultLabDir, "work directory: config, state, boot assets, disks, console logs")
	var cache, fw *string
	var keep *bool
	var blades, diskMiB *int
	switch sub {
	case "demo", "netboot", "up":
		cache = fs.String("cache", "/var/cache/imaged-lab", "where Debian's kernel package is kept between runs")
	}
	switch sub {
	case "netboot", "up":
		fw = fs.String("firmware", "bios", "blade firmware: bios (SeaBIOS + iPXE ROM) or uefi (OVMF: EDK2 PXE → TFTP ipxe.efi → iPXE)")
	}
	switch sub {
	case "demo":
		blades = fs.Int("blades", 2, "blades to reimage at once")
	case "netboot":
		keep = fs.Bool("keep", false, "leave the lab up until Ctrl-C, to explore the API")
	case "up":
		blades = fs.Int("blades", 2, "blades in the chassis (1-45)")
		diskMiB = fs.Int("disk-mib", 1024, "each blade's sparse disk, in MiB")
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if fw != nil && *fw != "bios" && *fw != "uefi" {
		return usageError{"-firmware must be bios or uefi"}
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	switch sub {
	case "demo":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		_, err = lab.Story(ctx, lab.StoryOptions{Dir: abs, CacheDir: *cache, Imaged: exe, Blades: *blades}, stdout)
		return err
	case "netboot":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		return lab.Demo(ctx, lab.DemoOptions{Dir: abs, CacheDir: *cache, Imaged: exe, Firmware: *fw, Keep: *keep}, stdout)
	case "up":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c, err := lab.ChassisUp(ctx, lab.ChassisOptions{Dir: abs, CacheDir: *cache, Imaged: exe, Blades: *blades, Firmware: *fw, DiskMiB: *diskMiB}, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "lab: chassis up in %s: %d blades (powered off) behind the Redfish BMC at %s, imaged serving at %s and %s\n", c.Dir, len(c.Blades), c.BMCURL, lab.BaseURL(), lab.HTTPSURL())
		fmt.Fprintf(stdout, "  config:     %s\n  API:        curl --unix-socket %s http://imaged/api/v1/machines\n", c.Config, c.ControlSocket())
		fmt.Fprintf(stdout, "  try:        imaged bmc boot -config %s %s pxe && imaged bmc power -config %s %[2]s on\n", c.Config, c.Blades[len(c.Blades)-1].ID, c.Config)
		fmt.Fprintf(stdout, "  consoles:   %s\n  stop:       imaged lab down -dir %s\n", filepath.Join(c.Dir, "console"), c.Dir)
		return nil
	case "down":
		return lab.ChassisDown(abs, stdout)
	case "bmc":
		// The chassis's BMC emulator; `lab up` starts it in the server namespace.
		log := slog.New(slog.NewTextHandler(stderr, nil))
		return lab.RunEmulator(ctx, abs, log)
	default: // status
		c, err := lab.LoadChassis(abs)
		if err != nil {
			return err
		}
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		word := map[bool]string{true: "running", false: "NOT RUNNING"}
		fmt.Fprintf(stdout, "chassis in %s, up since %s\n", c.Dir, c.Created.Local().Format("2006-01-02 15:04:05"))
		fmt.Fprintf(stdout, "  namespaces %s-srv/%s-cli: %s\n", c.Prefix, c.Prefix, map[bool]string{true: "present", false: "MISSING"}[st.NamespacesUp])
		fmt.Fprintf(stdout, "  BMC emulator (pid %d, %s): %s\n", c.EmulatorPID, c.BMCURL, word[st.EmulatorUp])
		fmt.Fprintf(stdout, "  imaged serve (pid %d, %s, control socket %s): %s\n", c.DaemonPID, lab.BaseURL(), c.ControlSocket(), word[st.DaemonUp])
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  BLADE\tMAC\tPOWER\tDISK\tCONSOLE")
		for _, b := range c.Blades {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", b.ID, b.MAC, dash(st.Power[b.ID]), b.Disk, filepath.Join(c.Dir, "console", b.ID+".log"))
		}
		tw.Flush()
		if !st.EmulatorUp || !st.DaemonUp || !st.NamespacesUp {
			return fmt.Errorf("the chassis in %s is not whole; imaged lab down -dir %s removes what is left", c.Dir, c.Dir)
		}
		return nil
	}
}
