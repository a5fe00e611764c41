package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestPickMode(t *testing.T) {
	os := Mode{Name: "os", Run: func(context.Context, string, *slog.Logger) error { return nil }}
	for _, tc := range []struct {
		cmdline, want, err string
	}{
		{cmdline: "console=ttyS0 imaged.server=http://x imaged.token=t", want: ""},
		{cmdline: "imaged.mode=agent", want: ""},
		{cmdline: "imaged.mode=os imaged.url=http://x", want: "os"},
		{cmdline: `imaged.mode=agent "imaged.mode=os"`, want: "os"},
		{cmdline: "imaged.mode=os -- imaged.mode=agent", want: "os"},
		{cmdline: "imaged.mode=rescue", err: `imaged.mode="rescue" is not a mode of this binary (it has agent, os)`},
	} {
		m, err := pickMode(tc.cmdline, []Mode{os})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.cmdline, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.cmdline, err)
		case tc.want == "" && m != nil:
			t.Errorf("%q: mode %q, want the agent", tc.cmdline, m.Name)
		case tc.want != "" && (m == nil || m.Name != tc.want):
			t.Errorf("%q: mode %v, want %q", tc.cmdline, m, tc.want)
		}
	}
}

func TestInitFlags(t *testing.T) {
	mods, debug, err := initFlags("imaged.mode=os imaged.debug=1")
	if err != nil || !mods || !debug {
		t.Errorf("got modules=%v debug=%v err=%v", mods, debug, err)
	}
	mods, debug, err = initFlags("imaged.modules=0")
	if err != nil || mods || debug {
		t.Errorf("got modules=%v debug=%v err=%v", mods, debug, err)
	}
	if _, _, err := initFlags("imaged.modules=maybe"); err == nil || !strings.Contains(err.Error(), `imaged.modules="maybe"`) {
		t.Errorf("bad imaged.modules: %v", err)
	}
}

func TestConfigureNICNeedsMAC(t *testing.T) {
	if _, err := ConfigureNIC(context.Background(), NIC{}, nil); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Errorf("ConfigureNIC without a MAC: %v", err)
	}
}
