package redfish

import (
	"regexp"
	"strconv"
	"strings"
)

// Quirks are a BMC firmware's departures from the Redfish standard that the client works
// around. They are detected once per session from the service root and the manager (see
// quirkTable) unless Config.Quirks sets them.
//
// Some rules hold for every BMC and are not quirks: the client sends If-Match with the
// resource's ETag on PATCH when the service gave one and re-reads once on 412, never sends
// If-Match on a POST action, follows 307/308 keeping method and body, and takes a success
// message wrapped in a 2xx error envelope as success.
type Quirks struct {
	// Name is the quirk table entry that matched ("standard" for none), for logs.
	Name string
	// NoBootModeWrite: never PATCH Boot.BootSourceOverrideMode. HPE iLO 4 and 5 (and the
	// Moonshot chassis manager) answer 400/405 to any write of it, even of its current value;
	// the boot mode is a BIOS setting there.
	NoBootModeWrite bool
	// TrailingSlash: end every URI path we build with "/". iLO 5 before 1.40 answers 308 to
	// a URI without one; following the redirect works but costs a round trip each time.
	TrailingSlash bool
	// SuccessIn400: a 400 whose @Message.ExtendedInfo all say Success is a success. Some iLO 4
	// and Moonshot firmware answer a successful PATCH or action so.
	SuccessIn400 bool
}

// identity is what the service root and the manager say about the BMC.
type identity struct {
	Vendor   string   // ServiceRoot Vendor ("HPE"); iLO 4 has none
	Product  string   // ServiceRoot Product
	Model    string   // Manager Model or Oem.Hp(e).Manager[0].ManagerType ("iLO 5")
	Firmware string   // Manager FirmwareVersion or Oem.Hp(e).Manager[0].ManagerFirmwareVersion
	Oem      []string // keys of the service root's Oem object ("Hp", "Hpe")
}

func (id identity) hasOem(k string) bool {
	for _, o := range id.Oem {
		if strings.EqualFold(o, k) {
			return true
		}
	}
	return false
}

func (id identity) hpe() bool {
	v := strings.ToUpper(id.Vendor)
	return v == "HPE" || v == "HP" || id.hasOem("Hpe") || id.hasOem("Hp")
}

var iloModel = regexp.MustCompile(`(?i)\bilo\s*(\d+)\b`)

// ilo returns the iLO generation (4, 5, 6) or 0.
func (id identity) ilo() int {
	m := iloModel.FindStringSubmatch(id.Model)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func (id identity) moonshot() bool {
	s := strings.ToLower(id.Model + " " + id.Product)
	return strings.Contains(s, "moonshot") || strings.Contains(s, "chassis manager") || strings.Contains(s, "ilo cm")
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)`)

// firmwareBelow reports whether fw ("iLO 5 v1.30", "1.30 Jan 01 2018", "2.72") is older than
// major.minor. An unparsable version is not below anything.
func firmwareBelow(fw string, major, minor int) bool {
	// "iLO 5 v1.30": skip the generation so that "5 v1" is not read as the version.
	if i := strings.LastIndex(strings.ToLower(fw), "v"); i >= 0 && i+1 < len(fw) && fw[i+1] >= '0' && fw[i+1] <= '9' {
		fw = fw[i+1:]
	}
	m := versionRE.FindStringSubmatch(fw)
	if m == nil {
		return false
	}
	ma, _ := strconv.Atoi(m[1])
	mi, _ := strconv.Atoi(m[2])
	// "1.4" and "1.40" are the same release in HPE's numbering; compare two-digit minors.
	if len(m[2]) == 1 {
		mi *= 10
	}
	return ma < major || ma == major && mi < minor
}

// quirkTable is checked in order; the first match wins.
var quirkTable = []struct {
	match  func(identity) bool
	quirks Quirks
}{
	{
		match:  func(id identity) bool { return id.hpe() && id.moonshot() },
		quirks: Quirks{Name: "hpe-moonshot-cm", NoBootModeWrite: true, SuccessIn400: true},
	},
	{
		match:  func(id identity) bool { return id.hpe() && id.ilo() == 4 },
		quirks: Quirks{Name: "hpe-ilo4", NoBootModeWrite: true, SuccessIn400: true},
	},
	{
		match:  func(id identity) bool { return id.hpe() && id.ilo() == 5 && firmwareBelow(id.Firmware, 1, 40) },
		quirks: Quirks{Name: "hpe-ilo5-pre1.40", NoBootModeWrite: true, TrailingSlash: true},
	},
	{
		match:  func(id identity) bool { return id.hpe() },
		quirks: Quirks{Name: "hpe-ilo", NoBootModeWrite: true},
	},
}

func quirksFor(id identity) Quirks {
	for _, e := range quirkTable {
		if e.match(id) {
			return e.quirks
		}
	}
	return Quirks{Name: "standard"}
}
