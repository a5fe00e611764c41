package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/imaged/imaged/internal/agent"
	"github.com/imaged/imaged/internal/lab/labos/osinit"
)

// runAgentInit is the initramfs path: imaged is /init (PID 1) on the blade.
func runAgentInit(ctx context.Context, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return agent.RunInit(ctx, log, osinit.Mode())
}

// cmdAgent runs the agent on an already-booted system, reading its parameters from
// /proc/cmdline unless -cmdline gives them.
func cmdAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("agent", stderr)
	cmdline := fs.String("cmdline", "", "kernel-command-line style parameters (default: /proc/cmdline), e.g. 'imaged.server=http://10.99.0.1:8080 imaged.token=T imaged.mac=52:54:00:99:00:11'")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cmdline == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return err
		}
		*cmdline = string(b)
	}
	cfg, err := agent.ParseCmdline(*cmdline)
	if err != nil {
		return usageError{err.Error()}
	}
	return agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(stderr, nil)))
}
