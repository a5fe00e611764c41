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
func RunInit(ctx context.Context, log *slog.Logger, modes ...Mode) error {
	return errors.ErrUnsupported
}

// ConfigureNIC needs Linux.
func ConfigureNIC(ctx context.Context, n NIC, log *slog.Logger) (Link, error) {
	return Link{}, errors.ErrUnsupported
}
