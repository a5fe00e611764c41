// Command imaged-agent is imaged's agent and nothing else: the /init of the netboot initramfs
// that `imaged initrd build` makes, built from the same packages as the server (internal/agent)
// but without any of the server's (no bbolt, AWS SDK, gofish, Prometheus or lab: TestDeps), so
// that every blade loads about 7 MB instead of the whole 57 MB imaged.
//
// Started by the kernel as /init (PID 1), it is the blade's whole userland (agent.RunInit).
// Started any other way, it runs the agent once on an already booted system with the parameters
// of /proc/cmdline, or of -cmdline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaged-agent:", err)
		code := 1
		if errors.As(err, new(usageError)) {
			code = 2
		}
		os.Exit(code)
	}
}

// usageError marks a mistake in the command line; it exits 2, other errors exit 1.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run is the whole program: it returns errors and never exits, so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The kernel starts the initramfs's /init as PID 1 with no arguments. RunInit refuses to run
	// as any other process, so /init started by hand says so instead of running the agent.
	if os.Getpid() == 1 || filepath.Base(args[0]) == "init" {
		// No logger of ours: RunInit logs to the console at the level imaged.debug= asks for.
		return agent.RunInit(ctx, nil)
	}
	fs := flag.NewFlagSet("imaged-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: imaged-agent [-cmdline PARAMS]\n\n"+
			"imaged's agent. As /init of the netboot initramfs (PID 1) it runs by itself; run by hand it\n"+
			"runs the agent once on this system.\n\n")
		fs.PrintDefaults()
	}
	cmdline := fs.String("cmdline", "", "kernel-command-line style parameters (default: /proc/cmdline), e.g. 'imaged.server=https://10.99.0.1:8443 imaged.token=T imaged.mac=52:54:00:99:00:11 imaged.tls_sha256=HEX'")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q (imaged-agent takes only flags)", fs.Arg(0))}
	}
	if *showVersion {
		fmt.Fprintf(stdout, "imaged-agent %s\n", version.String())
		return nil
	}
	if *cmdline == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return fmt.Errorf("read the parameters: %w", err)
		}
		*cmdline = string(b)
	}
	cfg, err := agent.ParseCmdline(*cmdline)
	if err != nil {
		return usageError{err.Error()}
	}
	return agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(stderr, nil)))
}
