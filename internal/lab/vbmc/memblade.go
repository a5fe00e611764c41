package vbmc

import (
	"context"
	"net"
	"slices"
	"sync"
)

// MemBlade is a Blade without a machine behind it: it powers on and off at once and remembers
// where each power-on was asked to boot. Tests of the clients that drive a BMC use it.
type MemBlade struct {
	id  string
	mac net.HardwareAddr

	mu    sync.Mutex
	on    bool
	boots []BootSource
}

// NewMemBlade returns a blade that is off.
func NewMemBlade(id string, mac net.HardwareAddr) *MemBlade { return &MemBlade{id: id, mac: mac} }

func (b *MemBlade) ID() string            { return b.id }
func (b *MemBlade) MAC() net.HardwareAddr { return b.mac }
func (b *MemBlade) ConsolePath() string   { return "" }

func (b *MemBlade) PowerState() PowerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		return StateOn
	}
	return StateOff
}

func (b *MemBlade) PowerOn(ctx context.Context, boot Boot) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = true
	b.boots = append(b.boots, boot.Source)
	return nil
}

func (b *MemBlade) ForceOff(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	return nil
}

// GracefulShutdown is a ForceOff: the blade has no guest to ask.
func (b *MemBlade) GracefulShutdown(ctx context.Context) error { return b.ForceOff(ctx) }

// Boots lists where each power-on booted, in order.
func (b *MemBlade) Boots() []BootSource {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.boots)
}
