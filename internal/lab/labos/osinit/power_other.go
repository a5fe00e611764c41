//go:build !linux

package osinit

import (
	"context"
	"log/slog"
)

// watchPowerButton needs Linux's input devices.
func watchPowerButton(ctx context.Context, con *console, log *slog.Logger) {}
