package vbmc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// opTimeout bounds one power operation on a blade (starting or killing a process). It does not
// come from the request: a client that hangs up must not leave a blade half started.
const opTimeout = 30 * time.Second

// earlyWindow is how long a graceful reset waits before answering, so that a failure to press
// the power button at all (QMP unreachable) is reported to the client rather than only logged.
const earlyWindow = 500 * time.Millisecond

// pendingOp is a graceful shutdown or restart waiting for the guest to power off.
type pendingOp struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// errAlreadyOn is an On reset of a system that is on.
var errAlreadyOn = errors.New("already on")

// serveReset is POST .../Actions/ComputerSystem.Reset.
//
// Semantics (DSP0268 ResetType), answered with 204 once done or, for the graceful types, once
// the ACPI power button was pressed:
//
//   - On powers on, booting per the boot override; on a system that is On it is refused with
//     409 (Imaged.AlreadyOn) rather than ignored: a client that set PXE-once and sent On
//     would otherwise believe a netboot started when nothing happened. The override is kept.
//   - ForceOff cuts the power; GracefulShutdown presses the ACPI button and the system reaches
//     Off when the guest powers off, or stays On if the guest ignores ACPI (a firmware with no
//     OS does). On a system that is Off both do nothing and succeed: the state asked for holds.
//   - ForceRestart and PowerCycle power off (if on) and on again; GracefulRestart is a graceful
//     shutdown, then on. On a system that is Off they power it on.
//
// A reset first cancels a graceful shutdown still waiting for its guest: a ForceOff after a
// GracefulShutdown that the guest ignored is how an operator gives up waiting.
func (sys *system) serveReset(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	rt, errs := decodeReset(body)
	if len(errs) > 0 {
		writeError(w, http.StatusBadRequest, errs...)
		return
	}
	log := sys.srv.log.With("system", sys.id, "reset", rt)
	err := sys.reset(rt)
	switch {
	case errors.Is(err, errAlreadyOn):
		log.Info("reset refused: already on")
		writeError(w, http.StatusConflict, msgAlreadyOn.info("#/ResetType", sys.id))
	case err != nil:
		log.Error("reset failed", "err", err)
		e := msgInternalError.info("")
		e.Message += " " + err.Error()
		writeError(w, http.StatusInternalServerError, e)
	default:
		log.Info("reset done", "power", sys.blade.PowerState())
		w.WriteHeader(http.StatusNoContent)
	}
}

func (sys *system) reset(rt resetType) error {
	sys.cancelPending()
	sys.op.Lock()
	defer sys.op.Unlock()
	ctx, cancel := context.WithTimeout(sys.srv.life, opTimeout)
	defer cancel()
	on := sys.blade.PowerState() != StateOff
	switch rt {
	case resetOn:
		if on {
			return errAlreadyOn
		}
		return sys.powerOn(ctx)
	case resetForceOff:
		if !on {
			return nil
		}
		return sys.forceOff(ctx)
	case resetForceRestart, resetPowerCycle:
		if on {
			if err := sys.forceOff(ctx); err != nil {
				return err
			}
		}
		return sys.powerOn(ctx)
	case resetGracefulShutdown, resetGracefulRestart:
		if !on {
			if rt == resetGracefulRestart {
				return sys.powerOn(ctx)
			}
			return nil
		}
		return sys.startGraceful(rt == resetGracefulRestart)
	}
	return fmt.Errorf("reset type %s not implemented", rt) // decodeReset admits no other
}

func (sys *system) forceOff(ctx context.Context) error {
	if err := sys.blade.ForceOff(ctx); err != nil {
		return fmt.Errorf("force off %s: %w", sys.id, err)
	}
	return nil
}

// powerOn powers the blade on as the boot override says, then consumes a Once override:
// "Once: the system boots (one time) to the boot source override target, after which
// BootSourceOverrideEnabled is reset to Disabled" (ComputerSystem.BootSourceOverrideEnabled).
// Only a boot that started consumes it.
func (sys *system) powerOn(ctx context.Context) error {
	sys.mu.Lock()
	o := sys.override
	sys.mu.Unlock()
	boot := Boot{Source: BootNone}
	if o.Enabled != "Disabled" {
		boot = Boot{Source: o.Target, Persistent: o.Enabled == "Continuous", HTTPURI: o.URI}
	}
	if err := sys.blade.PowerOn(ctx, boot); err != nil {
		return fmt.Errorf("power on %s: %w", sys.id, err)
	}
	if o.Enabled == "Once" {
		sys.mu.Lock()
		if sys.override.gen == o.gen { // unless a PATCH came in meanwhile
			sys.override.Enabled = "Disabled"
			sys.override.gen++
		}
		sys.mu.Unlock()
	}
	sys.srv.log.Info("powered on", "system", sys.id, "boot", boot.Source, "persistent", boot.Persistent)
	return nil
}

// startGraceful presses the power button and leaves a goroutine waiting for the guest to power
// off (and, for a restart, powering on again). It returns an error only when the button could
// not be pressed, as far as earlyWindow tells.
func (sys *system) startGraceful(restart bool) error {
	ctx, cancel := context.WithTimeout(sys.srv.life, sys.srv.cfg.GracefulTimeout)
	p := &pendingOp{cancel: cancel, done: make(chan struct{})}
	result := make(chan error, 1)
	sys.mu.Lock()
	sys.pending = p
	sys.mu.Unlock()
	sys.srv.bg.Add(1)
	go func() {
		defer sys.srv.bg.Done()
		defer close(p.done)
		defer cancel()
		defer sys.clearPending(p)
		log := sys.srv.log.With("system", sys.id, "restart", restart)
		err := sys.blade.GracefulShutdown(ctx)
		result <- err
		if err != nil {
			// The truth: the guest did not power off (or the button could not be pressed).
			log.Warn("graceful shutdown did not power the system off", "err", err, "power", sys.blade.PowerState())
			return
		}
		log.Info("guest powered off")
		if !restart {
			return
		}
		sys.op.Lock()
		defer sys.op.Unlock()
		if ctx.Err() != nil { // superseded by another reset, or the service stops
			return
		}
		if err := sys.powerOn(ctx); err != nil {
			log.Error("graceful restart: power on failed", "err", err)
		}
	}()
	t := time.NewTimer(earlyWindow)
	defer t.Stop()
	select {
	case err := <-result:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("graceful shutdown of %s: %w", sys.id, err)
		}
		return nil
	case <-t.C:
		return nil // the guest is shutting down, or ignoring the button: PowerState tells
	}
}

// cancelPending cancels a graceful operation in flight and waits for its goroutine.
func (sys *system) cancelPending() {
	sys.mu.Lock()
	p := sys.pending
	sys.pending = nil
	sys.mu.Unlock()
	if p != nil {
		p.cancel()
		<-p.done
	}
}

func (sys *system) clearPending(p *pendingOp) {
	sys.mu.Lock()
	if sys.pending == p {
		sys.pending = nil
	}
	sys.mu.Unlock()
}
