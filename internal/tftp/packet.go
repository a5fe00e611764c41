package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// Opcodes, RFC 1350 §5, and OACK from RFC 2347.
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes, RFC 1350 appendix "Error Codes", and 8 from RFC 2347.
const (
	codeUndefined       = 0 // "Not defined, see error message (if any)."
	codeNotFound        = 1 // "File not found."
	codeAccessViolation = 2 // "Access violation."
	codeIllegal         = 4 // "Illegal TFTP operation."
	codeOptions         = 8 // RFC 2347: "terminate transfer due to option negotiation"
)

// Largest block, RFC 2348: "Valid values range between "8" and "65464" octets, inclusive."
// (65464 + 4 bytes of TFTP header + 8 of UDP + 20 of IPv4 header = 65496 < 65535.)
const (
	minBlockSize     = 8
	maxBlockSize     = 65464
	defaultBlockSize = 512 // RFC 1350: "the file is sent in fixed length blocks of 512 bytes"
)

type option struct{ name, value string }

type request struct {
	op   uint16
	name string   // as sent, for logs and the Observer
	mode string   // lower case: "octet" or "netascii"
	opts []option // names lower case, in the order the client sent them
}

var errMalformed = errors.New("malformed request")

// parseRequest decodes an RRQ or WRQ (RFC 1350 §5):
//
//	2 bytes  string    1 byte  string  1 byte
//	opcode | filename |  0   |  mode  |  0  | opt1 | 0 | value1 | 0 | ...   (options: RFC 2347)
//
// Other opcodes, or a request without its two NUL-terminated strings, are errMalformed.
func parseRequest(b []byte) (request, error) {
	if len(b) < 2 {
		return request{}, errMalformed
	}
	r := request{op: binary.BigEndian.Uint16(b)}
	if r.op != opRRQ && r.op != opWRQ {
		return request{}, errMalformed
	}
	fields := bytes.Split(b[2:], []byte{0})
	// A well-formed request ends in NUL, so Split leaves an empty last field.
	if len(fields) < 3 || len(fields[len(fields)-1]) != 0 || len(fields[0]) == 0 {
		return request{}, errMalformed
	}
	fields = fields[:len(fields)-1]
	r.name = string(fields[0])
	// RFC 1350: "any combination of upper and lower case, such as "NETASCII," "NetAscii," etc.
	// are acceptable".
	r.mode = strings.ToLower(string(fields[1]))
	// RFC 2347: options and values are "case-insensitive ASCII" (values here are numbers). Some
	// ROMs pad the request with extra NULs, which show up as empty names: skip those and any odd
	// field left at the end.
	for i := 2; i+1 < len(fields); i += 2 {
		name := strings.ToLower(string(fields[i]))
		if name == "" {
			continue
		}
		r.opts = append(r.opts, option{name, string(fields[i+1])})
	}
	return r, nil
}

// option returns the value of the first option called name, which must be lower case.
func (r request) option(name string) (string, bool) {
	for _, o := range r.opts {
		if o.name == name {
			return o.value, true
		}
	}
	return "", false
}

// optionInt returns an option's decimal value when it is present and within [lo, hi].
func (r request) optionInt(name string, lo, hi int) (int, bool) {
	v, ok := r.option(name)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

// appendOACK appends an option acknowledgment (RFC 2347): opcode 6, then name/value pairs.
func appendOACK(b []byte, opts []option) []byte {
	b = binary.BigEndian.AppendUint16(b, opOACK)
	for _, o := range opts {
		b = append(b, o.name...)
		b = append(b, 0)
		b = append(b, o.value...)
		b = append(b, 0)
	}
	return b
}

// appendError appends an ERROR packet (RFC 1350 §5): opcode 5, error code, message, NUL.
func appendError(b []byte, code uint16, msg string) []byte {
	b = binary.BigEndian.AppendUint16(b, opERROR)
	b = binary.BigEndian.AppendUint16(b, code)
	b = append(b, msg...)
	return append(b, 0)
}

// parseError decodes an ERROR packet's code and message (RFC 1350 §5); ok is false for others.
func parseError(b []byte) (code uint16, msg string, ok bool) {
	if len(b) < 4 || binary.BigEndian.Uint16(b) != opERROR {
		return 0, "", false
	}
	m := b[4:]
	if i := bytes.IndexByte(m, 0); i >= 0 {
		m = m[:i]
	}
	if len(m) > 128 {
		m = m[:128]
	}
	return binary.BigEndian.Uint16(b[2:]), strings.ToValidUTF8(string(m), "?"), true
}
