package osinit

import (
	"context"
	"log/slog"
	"os"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos"
)

// Mode is the os mode for agent.RunInit: PID 1 runs it instead of the agent when the kernel
// command line says imaged.mode=os. internal/lab/cmd/imaged-labos-init passes it:
//
//	agent.RunInit(ctx, nil, osinit.Mode())
func Mode() agent.Mode {
	return agent.Mode{Name: labos.ModeName, Run: runInit}
}

// runInit is the mode's entry: agent.RunInit has mounted /dev, /proc, /sys and /tmp, put the
// console on fds 0-2 and loaded the initramfs's modules.
func runInit(ctx context.Context, cmdline string, log *slog.Logger) error {
	cfg, err := ParseCmdline(cmdline)
	if err != nil {
		return err
	}
	cfg.Console = os.Stdout
	cfg.ResolvConf = "/etc/resolv.conf"
	if os.Getpid() == 1 {
		// Only PID 1 of the booted image may power the machine off, never a test.
		go watchPowerButton(ctx, agent.NewConsole(cfg.Console, Prefix), log)
	}
	return Run(ctx, cfg, log)
}
