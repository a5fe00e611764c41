//go:build !linux

package agent

import (
	"context"
	"errors"
	"log/slog"
)

// Run needs Linux (interface ioctls, packet sockets).
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return errors.ErrUnsupported
}

// RunInit needs Linux.
func RunInit(ctx context.Context, log *slog.Logger) error {
	return errors.ErrUnsupported
}
