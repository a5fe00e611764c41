package osinit

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventLen)
	binary.NativeEndian.PutUint16(b[timevalLen:], typ)
	binary.NativeEndian.PutUint16(b[timevalLen+2:], code)
	binary.NativeEndian.PutUint32(b[timevalLen+4:], uint32(value))
	return b
}

func TestPowerPressed(t *testing.T) {
	const evSyn = 0
	press := append(inputEvent(evKey, keyPower, 1), inputEvent(evSyn, 0, 0)...)
	release := append(inputEvent(evKey, keyPower, 0), inputEvent(evSyn, 0, 0)...)
	for _, tc := range []struct {
		name string
		buf  []byte
		want bool
	}{
		{"press then sync", press, true},
		{"sync then press", append(inputEvent(evSyn, 0, 0), inputEvent(evKey, keyPower, 1)...), true},
		{"release", release, false},
		{"autorepeat", inputEvent(evKey, keyPower, 2), false},
		{"another key", inputEvent(evKey, 142 /* KEY_SLEEP */, 1), false},
		{"not a key event", inputEvent(0x04 /* EV_MSC */, keyPower, 1), false},
		{"short read", press[:inputEventLen-1], false},
	} {
		if got := powerPressed(tc.buf); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

func TestFindPowerButton(t *testing.T) {
	sys := t.TempDir()
	for ev, name := range map[string]string{"event0": "AT Translated Set 2 keyboard", "event1": "Power Button\n", "event2": "Sleep Button"} {
		os.MkdirAll(filepath.Join(sys, ev, "device"), 0o755)
		os.WriteFile(filepath.Join(sys, ev, "device", "name"), []byte(name), 0o644)
	}
	if got := findPowerButton(sys, "/dev/input"); got != "/dev/input/event1" {
		t.Errorf("found %q", got)
	}
	if got := findPowerButton(t.TempDir(), "/dev/input"); got != "" {
		t.Errorf("found %q where there is no input device", got)
	}
}
