package redfish

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/stmcginnis/gofish/schemas"

	"github.com/imaged/imaged/internal/power"
)

// The documents below hold only what the client uses. They take gofish's schema vocabulary
// (schemas.Link reads both "@odata.id" and the older HP "href" form; the enum types name the
// standard values) but not its resource structs: those fail as a whole on one vendor field of
// an unexpected type, keep the action targets and the NIC link private to gofish's own client,
// and would let an irrelevant field break power control.

// serviceRoot is GET /redfish/v1/.
type serviceRoot struct {
	Vendor         string
	Product        string
	RedfishVersion string
	Systems        schemas.Link
	Managers       schemas.Link
	SessionService schemas.Link
	Links          struct {
		Sessions schemas.Link
	}
	Oem map[string]json.RawMessage
}

// hpOemRoot is Oem.Hp / Oem.Hpe of an iLO service root, which names the manager without
// authentication.
type hpOemRoot struct {
	Manager []struct {
		ManagerType            string
		ManagerFirmwareVersion string
	}
}

func (r *serviceRoot) identity() identity {
	id := identity{Vendor: r.Vendor, Product: r.Product}
	for k, raw := range r.Oem {
		id.Oem = append(id.Oem, k)
		if !strings.EqualFold(k, "Hp") && !strings.EqualFold(k, "Hpe") {
			continue
		}
		var o hpOemRoot
		if json.Unmarshal(raw, &o) == nil && len(o.Manager) > 0 {
			id.Model, id.Firmware = o.Manager[0].ManagerType, o.Manager[0].ManagerFirmwareVersion
		}
	}
	return id
}

// sessionsPath is where to POST a login, or "" when the service has no SessionService.
func (r *serviceRoot) sessionsPath() string {
	switch {
	case r.Links.Sessions != "":
		return string(r.Links.Sessions)
	case r.SessionService != "":
		return "/redfish/v1/SessionService/Sessions"
	}
	return ""
}

// manager is a member of /redfish/v1/Managers.
type manager struct {
	Model           string
	FirmwareVersion string
}

// collection is any Redfish resource collection.
type collection struct {
	Members  schemas.Links
	NextLink string `json:"Members@odata.nextLink"`
}

// system is a ComputerSystem.
type system struct {
	ODataID      string `json:"@odata.id"`
	ODataEtag    string `json:"@odata.etag"`
	ID           string `json:"Id"`
	Name         string
	Manufacturer string
	Model        string
	SerialNumber string
	PowerState   schemas.PowerState
	Status       struct {
		Health schemas.Health
	}
	Boot struct {
		BootSourceOverrideEnabled schemas.BootSourceOverrideEnabled
		BootSourceOverrideTarget  schemas.BootSource
		BootSourceOverrideMode    schemas.BootSourceOverrideMode
		HTTPBootURI               *string  `json:"HttpBootUri"`
		AllowableTargets          []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
		// iLO 4 (Redfish 1.0) lists the targets under the pre-standard name.
		SupportedTargets []string `json:"BootSourceOverrideSupported"`
		AllowableModes   []string `json:"BootSourceOverrideMode@Redfish.AllowableValues"`
	}
	Actions struct {
		Reset struct {
			// iLO 4 spells it "target"; encoding/json matches names case-insensitively.
			Target     string   `json:"target"`
			Allowable  []string `json:"ResetType@Redfish.AllowableValues"`
			ActionInfo string   `json:"@Redfish.ActionInfo"`
		} `json:"#ComputerSystem.Reset"`
	}
	EthernetInterfaces schemas.Link
	// HostCorrelation is iLO 4's (Redfish 1.0) place for the host's NIC MACs; it has no
	// EthernetInterfaces collection for the host unless the OS runs the management agent.
	HostCorrelation struct {
		HostMACAddress []string
	}

	etag string // the ETag header of the GET, preferred over @odata.etag
}

// ethernetInterface is a member of a system's EthernetInterfaces.
type ethernetInterface struct {
	MACAddress          string
	PermanentMACAddress string
}

// actionInfo is an @Redfish.ActionInfo resource.
type actionInfo struct {
	Parameters []struct {
		Name            string
		AllowableValues []string
	}
}

func (a *actionInfo) allowable(param string) []string {
	for _, p := range a.Parameters {
		if p.Name == param {
			return p.AllowableValues
		}
	}
	return nil
}

// errorBody is a Redfish error answer, also iLO's envelope around success messages.
type errorBody struct {
	Error *struct {
		Code         string    `json:"code"`
		Message      string    `json:"message"`
		ExtendedInfo []message `json:"@Message.ExtendedInfo"`
	} `json:"error"`
	ExtendedInfo []message `json:"@Message.ExtendedInfo"`
}

// message is an @Message.ExtendedInfo entry. Not schemas.Message: iLO sends numbers among its
// MessageArgs, which a []string refuses.
type message struct {
	MessageID string `json:"MessageId"`
	Message   string
}

func (m message) success() bool {
	// MessageId is Registry.Major.Minor.Key: "Base.1.4.Success", "iLO.0.10.Success".
	i := strings.LastIndex(m.MessageID, ".")
	return m.MessageID[i+1:] == "Success"
}

func (e *errorBody) messages() []message {
	if e.Error != nil {
		return append(e.Error.ExtendedInfo, e.ExtendedInfo...)
	}
	return e.ExtendedInfo
}

// allSuccess reports an answer whose every message is a Success (and there is one).
func (e *errorBody) allSuccess() bool {
	ms := e.messages()
	for _, m := range ms {
		if !m.success() {
			return false
		}
	}
	return len(ms) > 0
}

// first returns the first message that is not a success, else the envelope's code and message.
func (e *errorBody) first() (id, msg string) {
	for _, m := range e.messages() {
		if !m.success() {
			return m.MessageID, m.Message
		}
	}
	if e.Error != nil {
		return e.Error.Code, e.Error.Message
	}
	return "", ""
}

// decode unmarshals a Redfish JSON document; failure is power.ErrMalformed.
func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", power.ErrMalformed, err)
	}
	return nil
}

// decodeSystem decodes a ComputerSystem and checks the fields the client relies on.
func decodeSystem(b []byte) (*system, error) {
	var s system
	if err := decode(b, &s); err != nil {
		return nil, err
	}
	if s.ID == "" && s.ODataID == "" {
		return nil, fmt.Errorf("%w: ComputerSystem without Id or @odata.id", power.ErrMalformed)
	}
	return &s, nil
}

// parseMACs keeps the valid, non-zero 6-byte MACs of ss, skipping duplicates of seen.
func parseMACs(ss []string, seen map[string]bool) []net.HardwareAddr {
	var out []net.HardwareAddr
	for _, s := range ss {
		hw, err := net.ParseMAC(strings.TrimSpace(s))
		if err != nil || len(hw) != 6 || zeroMAC(hw) || seen[hw.String()] {
			continue
		}
		seen[hw.String()] = true
		out = append(out, hw)
	}
	return out
}

func zeroMAC(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0 {
			return false
		}
	}
	return true
}

// powerState maps Redfish PowerState onto power.State.
func powerState(s schemas.PowerState) power.State {
	switch s {
	case schemas.OnPowerState:
		return power.On
	case schemas.OffPowerState:
		return power.Off
	case schemas.PoweringOnPowerState:
		return power.PoweringOn
	case schemas.PoweringOffPowerState:
		return power.PoweringOff
	}
	return power.Unknown
}

// bootSources pairs each BootTarget with its Redfish BootSource; bootSource and bootTarget read
// the one table both ways.
var bootSources = []struct {
	target power.BootTarget
	source schemas.BootSource
}{
	{power.Pxe, schemas.PxeBootSource},
	{power.UefiHttp, schemas.UefiHTTPBootSource},
	{power.Disk, schemas.HddBootSource},
	{power.None, schemas.NoneBootSource},
}

// bootSource maps a BootTarget onto the Redfish BootSource (None for a target it does not know).
func bootSource(t power.BootTarget) schemas.BootSource {
	for _, b := range bootSources {
		if b.target == t {
			return b.source
		}
	}
	return schemas.NoneBootSource
}

// bootTarget maps a Redfish BootSource back onto a BootTarget; a source with no BootTarget
// (Cd, Usb, …) keeps its name, in lower case, and an absent one is None.
func bootTarget(s schemas.BootSource) power.BootTarget {
	if s == "" {
		return power.None
	}
	for _, b := range bootSources {
		if b.source == s {
			return b.target
		}
	}
	return power.BootTarget(strings.ToLower(string(s)))
}
