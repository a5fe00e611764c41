package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Mode is another program that the initramfs's PID 1 can run instead of the agent, chosen by
// imaged.mode=<Name> on the kernel command line (no imaged.mode, or imaged.mode=agent, is the
// agent). RunInit does the same early init for it as for the agent (mounts, console, reaping,
// the modules of /modules.order unless imaged.modules=0, imaged.debug=1) and then calls Run
// with the whole kernel command line. Milestone lines printed by RunInit for a mode start with
// "imaged <Name>: ". Run should not return while the machine is meant to be up: whatever it
// returns is held on the console like the agent's fatal errors.
//
// The agent does not import its modes (they import the agent); the program that is /init passes
// them to RunInit (the lab's imaged-labos-init; imaged-agent passes none).
type Mode struct {
	Name string
	Run  func(ctx context.Context, cmdline string, log *slog.Logger) error
}

// pickMode returns the mode that the command line's imaged.mode names, or nil for the agent.
func pickMode(cmdline string, modes []Mode) (*Mode, error) {
	name := ""
	for _, w := range splitCmdline(cmdline) {
		if v, ok := strings.CutPrefix(w, "imaged.mode="); ok {
			name = v // the kernel's rule for repeated parameters: the last one wins
		}
	}
	if name == "" || name == "agent" {
		return nil, nil
	}
	have := []string{"agent"}
	for i := range modes {
		if modes[i].Name == name {
			return &modes[i], nil
		}
		have = append(have, modes[i].Name)
	}
	return nil, fmt.Errorf("agent: imaged.mode=%q is not a mode of this binary (it has %s)", name, strings.Join(have, ", "))
}

// initFlags reads the parameters of the early init that every mode shares: imaged.modules=0
// (load no modules) and imaged.debug=1, as ParseCmdline does for the agent.
func initFlags(cmdline string) (modules, debug bool, err error) {
	modules = true
	for _, w := range splitCmdline(cmdline) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "imaged.modules":
			if modules, err = parseBool(v); err != nil {
				return false, false, fmt.Errorf("agent: imaged.modules=%q: %w", v, err)
			}
		case "imaged.debug":
			if debug, err = parseBool(v); err != nil {
				return false, false, fmt.Errorf("agent: imaged.debug=%q: %w", v, err)
			}
		}
	}
	return modules, debug, nil
}

// SplitCmdline splits a kernel command line into its words as the kernel's next_arg() does: on
// spaces, except inside double quotes, which are removed; it stops at "--" (the rest is init's
// argv). Modes parse their own imaged.* parameters with it.
func SplitCmdline(cmdline string) []string { return splitCmdline(cmdline) }

// NIC says which interface ConfigureNIC brings up, and how patiently. Zero values take the
// agent's defaults (see Config).
type NIC struct {
	MAC              net.HardwareAddr // required
	VendorClass      string           // DHCP option 60; default VendorClass
	Console          io.Writer        // milestone lines; default os.Stdout
	Prefix           string           // starts each milestone line; default Prefix
	ResolvConf       string           // if set, the lease's DNS servers are written here
	LinkTimeout      time.Duration
	CarrierTimeout   time.Duration
	DHCPTimeout      time.Duration
	DHCPAttemptRetry int
}

// Link is a NIC that ConfigureNIC configured.
type Link struct {
	Name     string // eth0
	MAC      net.HardwareAddr
	Addr     netip.Prefix  // the leased address and its prefix
	Gateway  netip.Addr    // of the default route; invalid when the lease has none
	ServerID netip.Addr    // the DHCP server (option 54)
	Lease    time.Duration // the lease time
}
