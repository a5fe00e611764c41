package redfish

import (
	"errors"
	"net"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"

	"github.com/imaged/imaged/internal/power"
)

func macs(t *testing.T, ss ...string) []net.HardwareAddr {
	t.Helper()
	var out []net.HardwareAddr
	for _, s := range ss {
		hw, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, hw)
	}
	return out
}

// TestSystems reads every fixture's systems and compares them whole: IDs (Moonshot cartridges
// as C<n>N<m>), MACs from EthernetInterfaces (PermanentMACAddress when MACAddress is empty) or
// iLO 4's HostCorrelation (all-zero MACs dropped), health, power, reset types and boot targets.
// It also proves the login each firmware gets: a session on iLO, basic auth on the chassis
// manager that has no SessionService.
func TestSystems(t *testing.T) {
	ilo5Targets := []string{"None", "Cd", "Hdd", "Usb", "SDCard", "Utilities", "Diags", "BiosSetup", "Pxe", "UefiShell", "UefiHttp", "UefiTarget"}
	moonshot := func(id, name, serial string, p power.State, health string, m []net.HardwareAddr) power.System {
		return power.System{ID: id, Name: name, Manufacturer: "HP", Model: "ProLiant m710x Server Cartridge",
			SerialNumber: serial, Health: health, Power: p, MACs: m,
			ResetTypes: []string{"On", "ForceOff", "ForceRestart", "PushPowerButton"},
			Boot:       power.BootOverride{Target: power.None, Enabled: "Disabled", Targets: []string{"None", "Pxe", "Hdd"}}}
	}
	for _, tc := range []struct {
		file   string
		rules  rules
		logins int
		want   []power.System
	}{
		{"ilo4.json", ilo4Rules, 1, []power.System{{
			ID: "1", Name: "Computer System", Manufacturer: "HP", Model: "ProLiant DL360 Gen9", SerialNumber: "CZJ5080AB1",
			Health: "OK", Power: power.On, MACs: macs(t, "14:58:d0:5a:0e:e8", "14:58:d0:5a:0e:e9"),
			ResetTypes: []string{"On", "ForceOff", "ForceRestart", "Nmi", "PushPowerButton"},
			Boot: power.BootOverride{Target: power.None, Enabled: "Disabled",
				Targets: []string{"None", "Cd", "Hdd", "Usb", "Utilities", "Diags", "BiosSetup", "Pxe", "UefiShell", "UefiTarget"}},
		}}},
		{"ilo5-1.30.json", ilo5v130Rules, 1, []power.System{{
			ID: "1", Name: "Computer System", Manufacturer: "HPE", Model: "ProLiant DL360 Gen10", SerialNumber: "MXQ81604KL",
			Health: "Warning", Power: power.Off, MACs: macs(t, "94:40:c9:3e:12:a0", "94:40:c9:3e:12:a1"),
			ResetTypes: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton"},
			Boot:       power.BootOverride{Target: power.None, Enabled: "Disabled", Mode: "Legacy", Targets: ilo5Targets},
		}}},
		{"ilo5-2.72.json", ilo5v272Rules, 1, []power.System{{
			ID: "1", Name: "Computer System", Manufacturer: "HPE", Model: "ProLiant DL380 Gen10", SerialNumber: "CZ2D1G0RB2",
			Health: "OK", Power: power.On, MACs: macs(t, "48:df:37:6a:90:10", "48:df:37:6a:90:11"),
			ResetTypes: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton", "GracefulRestart"},
			Boot:       power.BootOverride{Target: power.None, Enabled: "Disabled", Mode: "UEFI", Targets: ilo5Targets},
		}}},
		{"moonshot.json", moonshotRules, 0, []power.System{
			moonshot("C1N1", "Cartridge 1, Node 1", "CN7516C1N1", power.On, "OK", macs(t, "ec:b1:d7:7f:21:10", "ec:b1:d7:7f:21:11")),
			moonshot("C2N1", "Cartridge 2, Node 1", "CN7516C2N1", power.Off, "OK", macs(t, "ec:b1:d7:7f:22:10", "ec:b1:d7:7f:22:11")),
			moonshot("C3N1", "Cartridge 3, Node 1", "CN7516C3N1", power.On, "Critical", macs(t, "ec:b1:d7:7f:23:10")),
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t, tc.file, tc.rules)
				c := testClient(t, testConfig(), memTransport{f})
				got, err := c.Systems(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("Systems (-want +got):\n%s", d)
				}
				if n := f.count("login"); n != tc.logins {
					t.Errorf("%d logins, want %d", n, tc.logins)
				}
				if n := f.count("401"); n != 0 {
					t.Errorf("%d requests refused for want of credentials", n)
				}
			})
		})
	}
}

// TestSystemByID finds a chassis manager's cartridge by its ID in any case, by the path learnt
// before, and says ErrNotFound for one that is not there.
func TestSystemByID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t, "moonshot.json", moonshotRules)
		c := testClient(t, testConfig(), memTransport{f})
		s, err := c.System(t.Context(), "c2n1")
		if err != nil {
			t.Fatal(err)
		}
		if s.ID != "C2N1" || s.SerialNumber != "CN7516C2N1" {
			t.Errorf("System(c2n1) = %s %s", s.ID, s.SerialNumber)
		}
		// Found by its path segment: the other cartridges were not read.
		if n := f.count("GET /redfish/v1/Systems/c1n1/"); n != 0 {
			t.Errorf("read C1N1 %d times to find C2N1", n)
		}
		before := f.count("GET /redfish/v1/Systems/")
		if _, err := c.System(t.Context(), "C2N1"); err != nil {
			t.Fatal(err)
		}
		if f.count("GET /redfish/v1/Systems/") != before {
			t.Error("the collection was read again for a system whose path was known")
		}
		_, err = c.System(t.Context(), "C9N1")
		if !errors.Is(err, power.ErrNotFound) {
			t.Errorf("System(C9N1) = %v, want ErrNotFound", err)
		}
	})
}

func TestNormalID(t *testing.T) {
	for _, tc := range []struct{ id, name, want string }{
		{"c1n1", "", "C1N1"},
		{"C10N2", "", "C10N2"},
		{"7", "Cartridge 7, Node 2", "C7N2"},
		{"7", "Cartridge7 Node1", "C7N1"},
		{"1", "Computer System", "1"},
		{"System.Embedded.1", "System", "System.Embedded.1"},
		{"c01n01", "", "C1N1"},
	} {
		if got := normalID(tc.id, tc.name); got != tc.want {
			t.Errorf("normalID(%q, %q) = %q, want %q", tc.id, tc.name, got, tc.want)
		}
	}
	if got := systemID(&system{ODataID: "/redfish/v1/Systems/c4n1/"}); got != "C4N1" {
		t.Errorf("systemID without Id = %q, want C4N1 from the path", got)
	}
}
