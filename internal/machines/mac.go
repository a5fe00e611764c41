package machines

import (
	"fmt"
	"net"
)

// MAC is a hardware address, as net.HardwareAddr. Its text is net.HardwareAddr's
// (52:54:00:99:00:11), which JSON, the state file and the logs hold: a net.HardwareAddr has no
// MarshalText, so encoding/json would write base64 and slog its raw bytes.
type MAC net.HardwareAddr

// ParseMAC reads a MAC as net.ParseMAC does (an EUI-48, EUI-64 or 20-byte InfiniBand address).
func ParseMAC(s string) (MAC, error) {
	a, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("machines: %q is not a MAC address: %w", s, err)
	}
	return MAC(a), nil
}

// MustParseMAC is ParseMAC for constants (tests, examples): it panics on a malformed one.
func MustParseMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func (m MAC) String() string { return net.HardwareAddr(m).String() }

// MarshalText is String's text (empty for no MAC).
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads what ParseMAC reads, or nothing for no MAC.
func (m *MAC) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = nil
		return nil
	}
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
