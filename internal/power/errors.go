package power

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors a Driver's callers can match with errors.Is. A driver wraps them with the operation and
// the cause, so one error may match several (a request that got no answer in time is both
// ErrUnreachable and ErrTimeout).
var (
	// ErrUnreachable: the controller could not be reached or did not answer (connection refused,
	// TLS failure, no answer within the per-call timeout).
	ErrUnreachable = errors.New("controller unreachable")
	// ErrUnavailable: the controller answered but kept failing (HTTP 5xx after the retries).
	ErrUnavailable = errors.New("controller unavailable")
	// ErrAuth: the credentials were refused (HTTP 401 or 403).
	ErrAuth = errors.New("authentication refused")
	// ErrPrecondition: the resource changed under us and did so again after a re-read
	// (HTTP 412), or the controller demands a precondition we cannot give.
	ErrPrecondition = errors.New("precondition failed")
	// ErrNotFound: no such machine or resource (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrUnsupported: the controller does not offer what was asked (a reset type or boot target
	// it does not list, UEFI HTTP boot on a machine in Legacy mode).
	ErrUnsupported = errors.New("not supported")
	// ErrDegraded: the controller's circuit breaker is open; the call was not attempted.
	ErrDegraded = errors.New("controller degraded")
	// ErrTimeout: something did not happen in time: a request got no answer within its timeout,
	// or the machine was not read back in the requested state before the deadline.
	ErrTimeout = errors.New("timed out")
	// ErrMalformed: the controller's answer could not be understood (bad JSON, missing fields).
	ErrMalformed = errors.New("malformed answer")
)

// HTTPError is a controller's HTTP error answer. It matches the sentinel its status maps to
// (401/403 ErrAuth, 404 ErrNotFound, 412/428 ErrPrecondition, 5xx ErrUnavailable).
type HTTPError struct {
	Method string
	Path   string // the URL path, never the credentials
	Status int
	// MessageID and Message come from the first Redfish @Message.ExtendedInfo entry, or from
	// the error's code and message when it has none.
	MessageID string
	Message   string
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.MessageID != "" {
		s += ": " + e.MessageID
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the sentinel the status maps to, or nil.
func (e *HTTPError) Unwrap() error {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return ErrAuth
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status == http.StatusPreconditionFailed || e.Status == http.StatusPreconditionRequired:
		return ErrPrecondition
	case e.Status >= 500:
		return ErrUnavailable
	}
	return nil
}
