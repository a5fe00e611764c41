package redfish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/imaged/imaged/internal/power"
)

// step is one reset and the power state it must lead to.
type step struct {
	reset schemas.ResetType
	want  power.State
}

// Power performs action on the system and returns once it was read back in the state the action
// leads to (Off for off and shutdown, On for the others). The ResetType is chosen among those
// the system lists in ResetType@Redfish.AllowableValues (or its @Redfish.ActionInfo), in the
// order of preference of plan; a system that lists none gets the standard first choice.
func (c *Client) Power(ctx context.Context, id string, action power.Action) error {
	if !slices.Contains(power.Actions, action) {
		return fmt.Errorf("redfish: power %s: %w: action %q", id, power.ErrUnsupported, action)
	}
	if err := c.power(ctx, id, action); err != nil {
		return fmt.Errorf("redfish: power %s %s: %w", action, id, err)
	}
	return nil
}

func (c *Client) power(ctx context.Context, id string, action power.Action) error {
	s, err := c.findSystem(ctx, id)
	if err != nil {
		return err
	}
	if st := powerState(s.PowerState); st == power.PoweringOn || st == power.PoweringOff {
		// A reset now would be refused or lost: let the transition finish first.
		if s, err = c.await(ctx, s.ODataID, "power state to settle", func(s *system) bool {
			st := powerState(s.PowerState)
			return st != power.PoweringOn && st != power.PoweringOff
		}); err != nil {
			return err
		}
	}
	allowed, err := c.resetTypes(ctx, s)
	if err != nil {
		return err
	}
	steps, err := plan(action, powerState(s.PowerState), allowed)
	if err != nil {
		return err
	}
	if len(steps) == 0 {
		c.log.Debug("power: nothing to do", "system", id, "action", action, "state", s.PowerState)
		return nil
	}
	target := s.Actions.Reset.Target
	if target == "" {
		target = strings.TrimSuffix(s.ODataID, "/") + "/Actions/ComputerSystem.Reset"
	}
	for _, st := range steps {
		body, err := jsonBody(map[string]schemas.ResetType{"ResetType": st.reset})
		if err != nil {
			return err
		}
		// No If-Match on actions (see roundTrip).
		if _, err := c.call(ctx, request{method: http.MethodPost, path: target, body: body}, nil); err != nil {
			return fmt.Errorf("reset %s: %w", st.reset, err)
		}
		c.log.Info("reset sent", "system", id, "action", action, "reset_type", st.reset)
		if _, err := c.await(ctx, s.ODataID, fmt.Sprintf("power %s after %s", st.want, st.reset), func(s *system) bool {
			return powerState(s.PowerState) == st.want
		}); err != nil {
			return err
		}
	}
	return nil
}

// resetTypes are the reset types the system accepts, or nil when it does not say.
func (c *Client) resetTypes(ctx context.Context, s *system) ([]string, error) {
	r := s.Actions.Reset
	if len(r.Allowable) > 0 || r.ActionInfo == "" {
		return r.Allowable, nil
	}
	var ai actionInfo
	if _, err := c.call(ctx, request{method: http.MethodGet, path: r.ActionInfo}, &ai); err != nil {
		if errors.Is(err, power.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read reset action info: %w", err)
	}
	return ai.allowable("ResetType"), nil
}

// plan chooses the resets that take a system in state to where action leads, preferring:
//
//	on:               On, ForceOn, then PushPowerButton (only when Off: it toggles)
//	off:              ForceOff
//	shutdown:         GracefulShutdown, then PushPowerButton (only when On)
//	restart:          ForceRestart, PowerCycle, then ForceOff and on
//	graceful-restart: GracefulRestart
//	cycle:            PowerCycle, then ForceOff and on
//
// A system already where the action leads needs no reset; restarting one that is off powers it
// on. allowed nil means the BMC did not say, and the first choice is taken.
func plan(action power.Action, state power.State, allowed []string) ([]step, error) {
	offers := func(t schemas.ResetType) bool { return len(allowed) == 0 || slices.Contains(allowed, string(t)) }
	lists := func(t schemas.ResetType) bool { return slices.Contains(allowed, string(t)) }
	unsupported := func() ([]step, error) {
		return nil, fmt.Errorf("%w: no reset type for %s among %v", power.ErrUnsupported, action, allowed)
	}
	on := func() ([]step, error) {
		switch {
		case offers(schemas.OnResetType):
			return []step{{schemas.OnResetType, power.On}}, nil
		case lists(schemas.ForceOnResetType):
			return []step{{schemas.ForceOnResetType, power.On}}, nil
		case lists(schemas.PushPowerButtonResetType) && state == power.Off:
			return []step{{schemas.PushPowerButtonResetType, power.On}}, nil
		}
		return unsupported()
	}
	switch action {
	case power.ActionOn:
		if state == power.On {
			return nil, nil
		}
		return on()
	case power.ActionOff:
		switch {
		case state == power.Off:
			return nil, nil
		case offers(schemas.ForceOffResetType):
			return []step{{schemas.ForceOffResetType, power.Off}}, nil
		}
	case power.ActionShutdown:
		switch {
		case state == power.Off:
			return nil, nil
		case offers(schemas.GracefulShutdownResetType):
			return []step{{schemas.GracefulShutdownResetType, power.Off}}, nil
		case lists(schemas.PushPowerButtonResetType) && state == power.On:
			return []step{{schemas.PushPowerButtonResetType, power.Off}}, nil
		}
	case power.ActionRestart, power.ActionGracefulRestart, power.ActionCycle:
		if state == power.Off {
			return on()
		}
		prefs := map[power.Action][]schemas.ResetType{
			power.ActionRestart:         {schemas.ForceRestartResetType, schemas.PowerCycleResetType},
			power.ActionGracefulRestart: {schemas.GracefulRestartResetType},
			power.ActionCycle:           {schemas.PowerCycleResetType},
		}[action]
		for _, t := range prefs {
			if offers(t) {
				return []step{{t, power.On}}, nil
			}
		}
		if action != power.ActionGracefulRestart && lists(schemas.ForceOffResetType) {
			state = power.Off // what the first step leads to
			rest, err := on()
			if err != nil {
				return nil, err
			}
			return append([]step{{schemas.ForceOffResetType, power.Off}}, rest...), nil
		}
	}
	return unsupported()
}
