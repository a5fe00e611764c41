package vbmc

import (
	"crypto/sha1"
	"fmt"
	"net/http"
	"sync"
)

// system is one ComputerSystem: a Blade and the BMC-side state that the blade does not hold,
// its boot override.
type system struct {
	srv   *Server
	blade Blade
	id    string
	path  string

	mu       sync.Mutex // guards override and pending
	override bootSettings
	pending  *pendingOp // a graceful shutdown or restart waiting for the guest

	op sync.Mutex // serialises power operations on the blade
}

// bootSettings are the writable Boot properties.
type bootSettings struct {
	Enabled string // Disabled, Once, Continuous
	Target  BootSource
	Mode    string // Legacy, UEFI
	URI     string // HttpBootUri; "" is null
	gen     uint64 // bumped on every change, so a reset knows whether a PATCH came in between
}

var (
	enabledValues = []string{"Disabled", "Once", "Continuous"}
	targetValues  = []string{string(BootNone), string(BootPxe), string(BootHdd), string(BootUefiHttp)}
	modeValues    = []string{"Legacy", "UEFI"}
	resetValues   = []string{string(resetOn), string(resetForceOff), string(resetGracefulShutdown),
		string(resetForceRestart), string(resetGracefulRestart), string(resetPowerCycle)}
)

func newSystem(s *Server, b Blade) *system {
	mode := "UEFI"
	if m, ok := b.(BootModer); ok && m.BootMode() == "Legacy" {
		mode = "Legacy"
	}
	return &system{srv: s, blade: b, id: b.ID(), path: "/redfish/v1/Systems/" + b.ID(),
		override: bootSettings{Enabled: "Disabled", Target: BootNone, Mode: mode}}
}

// uuid is a stable name-based UUID (RFC 9562 version 5 layout) for a resource name, so that a
// system keeps its UUID across restarts of the BMC.
func uuid(name string) string {
	h := sha1.Sum([]byte("imaged-vbmc/" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// doc renders the ComputerSystem. The power state is read from the blade each time.
func (sys *system) doc() map[string]any {
	sys.mu.Lock()
	o := sys.override
	sys.mu.Unlock()
	return sys.render(o)
}

func (sys *system) render(o bootSettings) map[string]any {
	state := sys.blade.PowerState()
	status := "Enabled"
	if state == StateOff {
		status = "StandbyOffline" // present, waiting for power (Resource.State)
	}
	var uri any // null when unset
	if o.URI != "" {
		uri = o.URI
	}
	cid := sys.srv.cfg.ChassisID
	return map[string]any{
		"@odata.id":    sys.path,
		"@odata.type":  "#ComputerSystem.v1_20_0.ComputerSystem",
		"Id":           sys.id,
		"Name":         sys.id,
		"SystemType":   "Physical",
		"Manufacturer": "imaged",
		"Model":        "virtual blade",
		"UUID":         uuid("system/" + sys.id),
		"PowerState":   string(state),
		"Status":       map[string]any{"State": status, "Health": "OK"},
		"Boot": map[string]any{
			"BootSourceOverrideEnabled":                         o.Enabled,
			"BootSourceOverrideEnabled@Redfish.AllowableValues": enabledValues,
			"BootSourceOverrideTarget":                          string(o.Target),
			"BootSourceOverrideTarget@Redfish.AllowableValues":  targetValues,
			"BootSourceOverrideMode":                            o.Mode,
			"BootSourceOverrideMode@Redfish.AllowableValues":    modeValues,
			"HttpBootUri": uri,
		},
		"EthernetInterfaces": link(sys.path + "/EthernetInterfaces"),
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            sys.path + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": resetValues,
			},
		},
		"Links": map[string]any{
			"Chassis":   links("/redfish/v1/Chassis/" + cid),
			"ManagedBy": links("/redfish/v1/Managers/" + cid),
		},
		"Oem": map[string]any{
			"Imaged": map[string]any{
				"@odata.type": "#ImagedComputerSystem.v1_0_0.ImagedComputerSystem",
				// The serial console as text/plain; Range requests and ?tail=N (lines) work.
				"ConsoleLog": sys.path + "/Oem/Imaged/ConsoleLog",
			},
		},
	}
}

// serve is GET and PATCH of the ComputerSystem.
func (sys *system) serve(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodPatch) {
		return
	}
	if r.Method == http.MethodPatch {
		sys.patch(w, r)
		return
	}
	writeResource(w, http.StatusOK, sys.doc())
}

// patch applies a PATCH of Boot properties: all of them or, on any error, none.
func (sys *system) patch(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	p, errs := decodeSystemPatch(body)
	if len(errs) > 0 {
		writeError(w, http.StatusBadRequest, errs...)
		return
	}
	sys.mu.Lock()
	// The If-Match check and the change happen under one lock: no other PATCH can slip in
	// between. The power state may still change under it, as on any BMC.
	cur := etagOf(sys.render(sys.override))
	if !ifMatch(r, cur) {
		sys.mu.Unlock()
		writeError(w, http.StatusPreconditionFailed, msgPrecondFailed.info(""))
		return
	}
	before := sys.override
	p.apply(&sys.override)
	if sys.override != before {
		sys.override.gen++
	}
	after := sys.override
	sys.mu.Unlock()
	if after != before {
		sys.srv.log.Info("boot override set", "system", sys.id, "enabled", after.Enabled,
			"target", after.Target, "mode", after.Mode, "uri", after.URI)
	}
	writeResource(w, http.StatusOK, sys.doc())
}
