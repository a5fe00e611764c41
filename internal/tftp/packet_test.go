package tftp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want request
		bad  bool
	}{
		{name: "rrq", in: "\x00\x01pxelinux.0\x00octet\x00",
			want: request{op: opRRQ, name: "pxelinux.0", mode: "octet"}},
		{name: "mode is case-insensitive", in: "\x00\x01f\x00NetASCII\x00",
			want: request{op: opRRQ, name: "f", mode: "netascii"}},
		{name: "options, names case-insensitive", in: "\x00\x01ipxe.efi\x00octet\x00BLKSIZE\x001468\x00tsize\x000\x00",
			want: request{op: opRRQ, name: "ipxe.efi", mode: "octet",
				opts: []option{{"blksize", "1468"}, {"tsize", "0"}}}},
		{name: "NUL padding after the options", in: "\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00",
			want: request{op: opRRQ, name: "f", mode: "octet", opts: []option{{"tsize", "0"}}}},
		{name: "odd option left over", in: "\x00\x01f\x00octet\x00tsize\x00",
			want: request{op: opRRQ, name: "f", mode: "octet"}},
		{name: "wrq", in: "\x00\x02up\x00octet\x00",
			want: request{op: opWRQ, name: "up", mode: "octet"}},
		{name: "no mode terminator", in: "\x00\x01f\x00octet", bad: true},
		{name: "no mode", in: "\x00\x01f\x00", bad: true},
		{name: "empty name", in: "\x00\x01\x00octet\x00", bad: true},
		{name: "ack", in: "\x00\x04\x00\x01", bad: true},
		{name: "short", in: "\x00", bad: true},
		{name: "unknown opcode", in: "\x00\x09f\x00octet\x00", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRequest([]byte(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("parseRequest(%q) = %+v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(request{}, option{})); d != "" {
				t.Errorf("parseRequest(%q) (-want +got):\n%s", tc.in, d)
			}
		})
	}
}

func TestPackets(t *testing.T) {
	if got, want := appendOACK(nil, []option{{"tsize", "74213"}, {"blksize", "1468"}}),
		[]byte("\x00\x06tsize\x0074213\x00blksize\x001468\x00"); !bytes.Equal(got, want) {
		t.Errorf("appendOACK = %q, want %q", got, want)
	}
	pkt := appendError(nil, codeAccessViolation, "access violation")
	if want := []byte("\x00\x05\x00\x02access violation\x00"); !bytes.Equal(pkt, want) {
		t.Errorf("appendError = %q, want %q", pkt, want)
	}
	code, msg, ok := parseError(pkt)
	if !ok || code != codeAccessViolation || msg != "access violation" {
		t.Errorf("parseError = %d %q %v", code, msg, ok)
	}
}

// FuzzParseRequest feeds arbitrary datagrams to the request decoder: it must not panic, and
// what it accepts must be an RRQ or WRQ with a name and lower-case option names.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00tsize\x000\x00"))
	f.Add([]byte("\x00\x02f\x00netascii\x00"))
	f.Add([]byte("\x00\x05\x00\x08User aborted the transfer\x00"))
	f.Add([]byte("\x00\x01\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if r.op != opRRQ && r.op != opWRQ || r.name == "" {
			t.Fatalf("accepted %q as %+v", b, r)
		}
		for _, o := range r.opts {
			if o.name == "" || o.name != strings.ToLower(o.name) {
				t.Fatalf("option name %q from %q", o.name, b)
			}
		}
		_, _, _ = parseError(b)
	})
}
