package main

import (
	"github.com/imaged/imaged/internal/config"
	"github.com/imaged/imaged/internal/power/fleet"
	"github.com/imaged/imaged/internal/redfish"
)

// fleetConfig maps the config's bmcs and machines onto the BMC fleet's Config.
func fleetConfig(cfg *config.File) fleet.Config {
	var fc fleet.Config
	for _, c := range cfg.BMCs {
		fc.BMCs = append(fc.BMCs, fleet.BMC{Name: c.Name, Credentials: c.Credentials, Redfish: &redfish.Config{
			Endpoint: c.URL.URL, CAFile: c.CAFile, Fingerprint: c.Fingerprint, Insecure: c.Insecure,
			Timeout: c.Timeout.Duration, MaxConcurrent: c.MaxConcurrent}})
	}
	for _, m := range cfg.Machines {
		fm := fleet.Machine{ID: m.ID, BMC: m.BMC, System: m.BMCSystem}
		for _, mac := range m.MACs {
			fm.MACs = append(fm.MACs, mac.HardwareAddr)
		}
		fc.Machines = append(fc.Machines, fm)
	}
	return fc
}
