//go:build !linux

package osinit

import (
	"context"
	"log/slog"

	"github.com/imaged/imaged/internal/agent"
)

// watchPowerButton needs Linux's input devices.
func watchPowerButton(ctx context.Context, con *agent.Console, log *slog.Logger) {}
