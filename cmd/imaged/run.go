package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imaged/imaged/internal/version"
)

// usageError marks a mistake in the command line; it exits 2, other errors exit 1.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

const usage = `usage: imaged COMMAND [flags]

Commands:
  serve            run the daemon: DHCP/proxyDHCP, TFTP, HTTP boot, agent API, /metrics
  check-config     validate the config file and exit
  machines list    list the inventory with each machine's last agent hello
  machines unknown list the clients seen on the network that are not in the inventory
  machines events  print one machine's boot timeline
  machines assign  set the image a machine is to run (the agent writes it at its next netboot)
  machines reimage reimage a machine through the daemon: BMC, netboot, verified write, reboot, readiness (-wait)
  machines reboot  restart a machine into its disk through the daemon and wait until it is ready
  jobs list|show|cancel
                   the daemon's reimage jobs and their timelines
  image import     import NAME@VERSION from a file, http(s) URL or s3://bucket/key (raw, gz, zst, xz, qcow2, VHD, VHDX)
  image list|show|verify|delete|promote|rollback|prune
                   the image catalog and blob store
  bmc power        show or change a machine's power through its BMC (on, off, shutdown, restart, graceful-restart, cycle)
  bmc boot         set a machine's next boot, once: pxe, disk, none or uefi-http
  bmc inventory    a machine's system as its BMC reports it, or every system behind a BMC
  ami push         publish an image to EC2 as an AMI and copy it to other regions (only non-zero blocks; resumable; a second push is a no-op)
  ami list         imaged's AMIs in every region, and the channels pointing at them
  ami promote      point a channel of the published amis.json at a version's AMIs (ami rollback: back one step)
  ami prune        deregister old AMIs and delete their snapshots (never what a channel points at)
  ami smoke        launch an AMI, probe it, capture its console, terminate it; the exit status is the verdict
  token new        make an API bearer token (the config keeps only its SHA-256)
  initrd build     build the netboot initramfs: the imaged-agent program as /init, and kernel modules
  lab demo         the whole story on a virtual chassis: reimage its blades through the API, show the jobs (root)
  lab netboot      netboot one QEMU blade into the agent and show its boot timeline (root)
  lab up|down|status
                   a virtual chassis: QEMU blades behind a Redfish BMC emulator, and imaged (root)
  version          print the version

Run 'imaged COMMAND -h' for a command's flags.
`

// run is the whole program: it returns errors and never exits, so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	err := dispatch(ctx, args[1], args[2:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, cmd string, rest []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout, stderr)
	case "machines":
		return cmdMachines(ctx, rest, stdout, stderr)
	case "image":
		return cmdImage(ctx, rest, stdout, stderr)
	case "initrd":
		return cmdInitrd(ctx, rest, stdout, stderr)
	case "bmc":
		return cmdBMC(ctx, rest, stdout, stderr)
	case "jobs":
		return cmdJobs(ctx, rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "ami":
		return cmdAMI(ctx, rest, stdout, stderr)
	case "lab":
		return cmdLab(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "imaged %s\n", version.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("imaged "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err // the usage is printed; run turns this into a clean exit
		}
		return usageError{err.Error()}
	}
	return nil
}

// defaultConfig is the config path unless -config or $IMAGED_CONFIG says otherwise.
func defaultConfig() string {
	if p := os.Getenv("IMAGED_CONFIG"); p != "" {
		return p
	}
	return "/etc/imaged/imaged.yaml"
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", defaultConfig(), "config file (also $IMAGED_CONFIG)")
}

func subcommand(args []string, name string, cmds ...string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usageError{fmt.Sprintf("imaged %s needs a subcommand: %s", name, strings.Join(cmds, ", "))}
	}
	for _, c := range cmds {
		if args[0] == c {
			return c, args[1:], nil
		}
	}
	return "", nil, usageError{fmt.Sprintf("imaged %s: unknown subcommand %q (use %s)", name, args[0], strings.Join(cmds, ", "))}
}
