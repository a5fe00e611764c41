package machines

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestMACText(t *testing.T) {
	m := MustParseMAC("52:54:00:99:00:11")
	b, err := json.Marshal(struct {
		MAC  MAC   `json:"mac"`
		MACs []MAC `json:"macs"`
		None MAC   `json:"none,omitempty"`
	}{m, []MAC{m, MustParseMAC("52-54-00-99-00-12")}, nil})
	if want := `{"mac":"52:54:00:99:00:11","macs":["52:54:00:99:00:11","52:54:00:99:00:12"]}`; err != nil || string(b) != want {
		t.Errorf("JSON %s %v, want %s", b, err, want)
	}
	var back MAC
	if err := json.Unmarshal([]byte(`"52:54:00:99:00:11"`), &back); err != nil || !bytes.Equal(back, m) {
		t.Errorf("read back %v %v", back, err)
	}
	for _, bad := range []string{`"52:54:00:99:00"`, `"zz:54:00:99:00:11"`, `1`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// The records log as text: a MAC and an address are written as people read them, not as bytes
// (a net.HardwareAddr logs as "RT\x00\x99\x00\x11") or a struct.
func TestLoggedAsText(t *testing.T) {
	var text, js bytes.Buffer
	m, a := MustParseMAC("52:54:00:99:00:11"), netip.MustParseAddr("10.99.0.11")
	for _, l := range []*slog.Logger{slog.New(slog.NewTextHandler(&text, nil)), slog.New(slog.NewJSONHandler(&js, nil))} {
		l.Info("hello", "mac", m, "ip", a, "hello", Hello{MAC: m, IP: a})
	}
	if s := text.String(); !strings.Contains(s, " mac=52:54:00:99:00:11 ip=10.99.0.11 ") {
		t.Errorf("text log: %s", s)
	}
	if s := js.String(); !strings.Contains(s, `"mac":"52:54:00:99:00:11","ip":"10.99.0.11"`) || !strings.Contains(s, `"hello":{"time":"0001-01-01T00:00:00Z","mac":"52:54:00:99:00:11","ip":"10.99.0.11"}`) {
		t.Errorf("JSON log: %s", s)
	}
}
