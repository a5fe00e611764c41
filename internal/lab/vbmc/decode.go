package vbmc

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// This file decodes the two request bodies that change state: a PATCH of a ComputerSystem and
// the ComputerSystem.Reset action. Both take bytes from the network; both are fuzzed.

// systemPatch is a validated PATCH of a ComputerSystem; nil fields are left alone.
type systemPatch struct {
	Enabled *string
	Target  *BootSource
	Mode    *string
	URI     *string // "" clears HttpBootUri
}

func (p systemPatch) apply(o *bootSettings) {
	if p.Enabled != nil {
		o.Enabled = *p.Enabled
	}
	if p.Target != nil {
		o.Target = *p.Target
	}
	if p.Mode != nil {
		o.Mode = *p.Mode
	}
	if p.URI != nil {
		o.URI = *p.URI
	}
}

// readOnlySystem are ComputerSystem properties (rendered here or defined by the schema) that
// this service does not let a client change: writing them is PropertyNotWritable, whereas a
// name the schema does not know is PropertyUnknown.
var readOnlySystem = []string{
	"@odata.id", "@odata.type", "@odata.etag", "@odata.context", "Id", "Name", "Description",
	"SystemType", "Manufacturer", "Model", "SKU", "SerialNumber", "PartNumber", "UUID", "HostName",
	"AssetTag", "IndicatorLED", "LocationIndicatorActive", "BiosVersion", "PowerState", "Status",
	"ProcessorSummary", "MemorySummary", "PowerRestorePolicy", "BootProgress", "LastResetTime",
	"EthernetInterfaces", "Processors", "Memory", "Storage", "SimpleStorage", "LogServices", "Bios",
	"SecureBoot", "TrustedModules", "HostWatchdogTimer", "Actions", "Links", "Oem",
}

// readOnlyBoot are Boot properties of the schema that are not writable here.
var readOnlyBoot = []string{
	"BootOrder", "BootNext", "BootOptions", "AliasBootOrder", "BootOrderPropertySelection",
	"UefiTargetBootSourceOverride", "Certificates", "StopBootOnFault", "TrustedModuleRequiredToBoot",
	"AutomaticRetryConfig", "AutomaticRetryAttempts", "RemainingAutomaticRetryAttempts",
}

// decodeSystemPatch validates a PATCH body. It returns every problem found (the service then
// changes nothing), each naming the property as DSP0266 asks.
func decodeSystemPatch(body []byte) (systemPatch, []extendedInfo) {
	var p systemPatch
	top, bad := decodeObject(body)
	if bad != nil {
		return p, []extendedInfo{*bad}
	}
	if len(top) == 0 {
		return p, []extendedInfo{msgEmptyJSON.info("")}
	}
	var errs []extendedInfo
	for _, k := range sortedKeys(top) {
		switch {
		case k == "Boot":
		case slices.Contains(readOnlySystem, k) || strings.Contains(k, "@"):
			errs = append(errs, msgPropertyNotWrit.info("#/"+k, k))
		default:
			errs = append(errs, msgPropertyUnknown.info("#/"+k, k))
		}
	}
	raw, ok := top["Boot"]
	if !ok {
		return p, errs
	}
	boot, bad := decodeObject(raw)
	if bad != nil {
		return p, append(errs, msgValueTypeError.info("#/Boot", argValue(raw), "Boot"))
	}
	for _, k := range sortedKeys(boot) {
		v, ptr := boot[k], "#/Boot/"+k
		switch k {
		case "BootSourceOverrideEnabled":
			s, e := enumValue(v, k, ptr, enabledValues)
			if e != nil {
				errs = append(errs, *e)
			}
			p.Enabled = s
		case "BootSourceOverrideTarget":
			s, e := enumValue(v, k, ptr, targetValues)
			if e != nil {
				errs = append(errs, *e)
			} else {
				t := BootSource(*s)
				p.Target = &t
			}
		case "BootSourceOverrideMode":
			s, e := enumValue(v, k, ptr, modeValues)
			if e != nil {
				errs = append(errs, *e)
			}
			p.Mode = s
		case "HttpBootUri":
			var s *string
			if err := json.Unmarshal(v, &s); err != nil {
				errs = append(errs, msgValueTypeError.info(ptr, argValue(v), k))
				break
			}
			if s == nil { // null clears it
				s = new(string)
			}
			if *s != "" && !httpURL(*s) {
				errs = append(errs, msgValueFormatError.info(ptr, *s, k))
				break
			}
			p.URI = s
		default:
			if slices.Contains(readOnlyBoot, k) || strings.Contains(k, "@") {
				errs = append(errs, msgPropertyNotWrit.info(ptr, k))
			} else {
				errs = append(errs, msgPropertyUnknown.info(ptr, k))
			}
		}
	}
	if len(errs) > 0 {
		return systemPatch{}, errs
	}
	return p, nil
}

// resetType is a ResetType (Resource.ResetType) this service carries out.
type resetType string

const (
	resetOn               resetType = "On"
	resetForceOff         resetType = "ForceOff"
	resetGracefulShutdown resetType = "GracefulShutdown"
	resetForceRestart     resetType = "ForceRestart"
	resetGracefulRestart  resetType = "GracefulRestart"
	resetPowerCycle       resetType = "PowerCycle"
)

const resetAction = "ComputerSystem.Reset"

// decodeReset validates the body of a ComputerSystem.Reset: {"ResetType": "On"}. DSP0266
// lets a service require the parameter; this one does, since guessing what a client meant by
// an empty reset is how machines get rebooted by accident.
func decodeReset(body []byte) (resetType, []extendedInfo) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", []extendedInfo{msgActionParamMiss.info("#/ResetType", resetAction, "ResetType")}
	}
	obj, bad := decodeObject(body)
	if bad != nil {
		return "", []extendedInfo{*bad}
	}
	var errs []extendedInfo
	for _, k := range sortedKeys(obj) {
		if k != "ResetType" {
			errs = append(errs, msgActionParamUnk.info("#/"+k, resetAction, k))
		}
	}
	raw, ok := obj["ResetType"]
	var t string
	switch {
	case !ok:
		errs = append(errs, msgActionParamMiss.info("#/ResetType", resetAction, "ResetType"))
	case json.Unmarshal(raw, &t) != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")):
		errs = append(errs, msgActionValueType.info("#/ResetType", argValue(raw), "ResetType", resetAction))
	case !slices.Contains(resetValues, t):
		// Nmi, ForceOn, PushPowerButton and the like are valid Redfish reset types that this
		// service does not offer (they are not in ResetType@Redfish.AllowableValues).
		errs = append(errs, msgActionValueNIL.info("#/ResetType", t, "ResetType", resetAction))
	}
	if len(errs) > 0 {
		return "", errs
	}
	return resetType(t), nil
}

// decodeObject parses a JSON object into its members, or returns MalformedJSON.
func decodeObject(b []byte) (map[string]json.RawMessage, *extendedInfo) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil { // m == nil: the body was null
		e := msgMalformedJSON.info("")
		return nil, &e
	}
	return m, nil
}

// enumValue decodes a string that must be one of allowed.
func enumValue(v json.RawMessage, name, ptr string, allowed []string) (*string, *extendedInfo) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		e := msgValueTypeError.info(ptr, argValue(v), name)
		return nil, &e
	}
	if !slices.Contains(allowed, s) {
		e := msgValueNotInList.info(ptr, s, name)
		return nil, &e
	}
	return &s, nil
}

// argValue renders a JSON value for MessageArgs: a string as itself, anything else as JSON.
func argValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(v))
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
