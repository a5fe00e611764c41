package vbmc

import (
	"net/http"
	"strings"
)

// baseRegistry prefixes the MessageIds of the DMTF Base message registry (Base.1.16.0, DSP8011).
const baseRegistry = "Base.1.16.0."

// imagedRegistry prefixes this BMC's own messages, where Base has none (DSP0266 allows OEM
// registries; real BMCs such as iDRAC answer the same situations with theirs).
const imagedRegistry = "Imaged.1.0.0."

// A msgDef is one message of a registry; %1, %2... in text are replaced by its arguments.
type msgDef struct {
	id, text, severity, resolution string
	registry                       string // "" is Base
}

func baseMsg(id, text, severity, resolution string) msgDef {
	return msgDef{id: id, text: text, severity: severity, resolution: resolution}
}

func oemMsg(id, text, severity, resolution string) msgDef {
	return msgDef{id: id, text: text, severity: severity, resolution: resolution, registry: imagedRegistry}
}

// The messages of the Base registry that this service returns, worded after the registry.
var (
	msgGeneralError     = baseMsg("GeneralError", "A general error has occurred.  See Resolution for information on how to resolve the error, or @Message.ExtendedInfo if Resolution is not provided.", "Critical", "None.")
	msgInternalError    = baseMsg("InternalError", "The request failed due to an internal service error.  The service is still operational.", "Critical", "Resubmit the request.  If the problem persists, consider resetting the service.")
	msgMalformedJSON    = baseMsg("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.", "Critical", "Ensure that the request body is valid JSON and resubmit the request.")
	msgEmptyJSON        = baseMsg("EmptyJSON", "The request body submitted contained an empty JSON object and the service is unable to process it.", "Warning", "Add properties in the JSON object and resubmit the request.")
	msgPayloadTooLarge  = baseMsg("PayloadTooLarge", "The supplied payload exceeds the maximum size supported by the service.", "Warning", "Correct the request body and resubmit the request if it failed.")
	msgPropertyUnknown  = baseMsg("PropertyUnknown", "The property %1 is not in the list of valid properties for the resource.", "Warning", "Remove the unknown property from the request body and resubmit the request if the operation failed.")
	msgPropertyNotWrit  = baseMsg("PropertyNotWritable", "The property %1 is a read-only property and cannot be assigned a value.", "Warning", "Remove the property from the request body and resubmit the request if the operation failed.")
	msgValueNotInList   = baseMsg("PropertyValueNotInList", "The value %1 for the property %2 is not in the list of acceptable values.", "Warning", "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.")
	msgValueTypeError   = baseMsg("PropertyValueTypeError", "The value %1 for the property %2 is not a type that the property can accept.", "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed.")
	msgValueFormatError = baseMsg("PropertyValueFormatError", "The value %1 for the property %2 is not a format that the property can accept.", "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed.")
	msgActionParamMiss  = baseMsg("ActionParameterMissing", "The action %1 requires the parameter %2 to be present in the request body.", "Critical", "Supply the action with the required parameter in the request body when the request is resubmitted.")
	msgActionParamUnk   = baseMsg("ActionParameterUnknown", "The action %1 was submitted with the invalid parameter %2.", "Warning", "Correct the invalid parameter and resubmit the request if the operation failed.")
	msgActionValueNIL   = baseMsg("ActionParameterValueNotInList", "The value %1 for the parameter %2 in the action %3 is not in the list of acceptable values.", "Warning", "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.")
	msgActionValueType  = baseMsg("ActionParameterValueTypeError", "The value %1 for the parameter %2 in the action %3 is not a type that the parameter can accept.", "Warning", "Correct the value for the parameter in the request body and resubmit the request if the operation failed.")
	msgPrecondFailed    = baseMsg("PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.", "Critical", "Try the operation again using the appropriate ETag.")
	msgNoValidSession   = baseMsg("NoValidSession", "There is no valid session established with the implementation.", "Critical", "Establish a session before attempting any operations.")
	msgSessionLimit     = baseMsg("SessionLimitExceeded", "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.", "Critical", "Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions, if supported.")
	msgResourceMissing  = baseMsg("ResourceMissingAtURI", "The resource at the URI %1 was not found.", "Critical", "Place a valid resource at the URI or correct the URI and resubmit the request.")
	msgOpNotAllowed     = baseMsg("OperationNotAllowed", "The HTTP method is not allowed on this resource.", "Critical", "None.")
	msgQueryValueFormat = baseMsg("QueryParameterValueFormatError", "The value %1 for the parameter %2 is not a format that the parameter can accept.", "Warning", "Correct the value for the query parameter in the request and resubmit the request if the operation failed.")
	msgPropertyMissing  = baseMsg("PropertyMissing", "The property %1 is a required property and must be included in the request.", "Warning", "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.")

	// Imaged registry.
	msgAlreadyOn = oemMsg("AlreadyOn", "The system %1 is already powered on; reset type On does nothing and a pending boot override is kept.", "Warning", "Use ForceRestart or PowerCycle to boot the system again, or ForceOff first.")
	msgNoConsole = oemMsg("ConsoleLogUnavailable", "The system %1 has no console log yet.", "OK", "Power the system on; its serial console is recorded from then on.")
)

// extendedInfo is one Message (Message.v1_1_x) of @Message.ExtendedInfo.
type extendedInfo struct {
	ODataType         string   `json:"@odata.type"`
	MessageID         string   `json:"MessageId"`
	Message           string   `json:"Message"`
	MessageArgs       []string `json:"MessageArgs"`
	RelatedProperties []string `json:"RelatedProperties,omitempty"`
	MessageSeverity   string   `json:"MessageSeverity"`
	Severity          string   `json:"Severity"` // deprecated in Message 1.1, still read by older clients
	Resolution        string   `json:"Resolution"`
}

// info instantiates m with args. prop, if not empty, is a JSON pointer into the request body
// (such as "#/Boot/BootSourceOverrideTarget") for RelatedProperties.
func (m msgDef) info(prop string, args ...string) extendedInfo {
	text := m.text
	for i := len(args); i >= 1; i-- { // from the end, so that %1 does not eat %10's prefix
		text = strings.ReplaceAll(text, "%"+string(rune('0'+i)), args[i-1])
	}
	prefix := baseRegistry
	if m.registry != "" {
		prefix = m.registry
	}
	e := extendedInfo{ODataType: "#Message.v1_1_1.Message", MessageID: prefix + m.id, Message: text,
		MessageArgs: args, MessageSeverity: m.severity, Severity: m.severity, Resolution: m.resolution}
	if e.MessageArgs == nil {
		e.MessageArgs = []string{}
	}
	if prop != "" {
		e.RelatedProperties = []string{prop}
	}
	return e
}

// writeError answers with the Redfish error envelope (DSP0266 "Error responses"): code and
// message are those of the one message, or of GeneralError when there are several.
func writeError(w http.ResponseWriter, status int, msgs ...extendedInfo) {
	code, message := baseRegistry+msgGeneralError.id, msgGeneralError.text
	if len(msgs) == 1 {
		code, message = msgs[0].MessageID, msgs[0].Message
	}
	body := map[string]any{"error": map[string]any{
		"code":                  code,
		"message":               message,
		"@Message.ExtendedInfo": msgs,
	}}
	writeJSON(w, status, body, false)
}

// errMissing answers 404 for a URI that names no resource.
func errMissing(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, msgResourceMissing.info("", r.URL.Path))
}

// errUnauthorized answers 401. DSP0266: "a 401 response shall include the WWW-Authenticate
// header" for Basic; sessions are offered through Links.Sessions of the service root.
func errUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="imaged vbmc", charset="UTF-8"`)
	writeError(w, http.StatusUnauthorized, msgNoValidSession.info(""))
}

// allow answers 405 with an Allow header unless r's method is one of methods (HEAD counts as
// GET), and reports whether the handler should go on.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || r.Method == http.MethodHead && m == http.MethodGet {
			w.Header().Set("Allow", allowHeader(methods))
			return true
		}
	}
	w.Header().Set("Allow", allowHeader(methods))
	writeError(w, http.StatusMethodNotAllowed, msgOpNotAllowed.info(""))
	return false
}

func allowHeader(methods []string) string {
	var b strings.Builder
	for i, m := range methods {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m)
		if m == http.MethodGet {
			b.WriteString(", HEAD")
		}
	}
	return b.String()
}
