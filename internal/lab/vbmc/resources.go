package vbmc

import (
	"net/http"
	"strings"
)

// redfishVersion is the protocol version the service root claims (DSP0266 1.15).
const redfishVersion = "1.15.0"

// serveVersions is GET /redfish: the protocol versions, unauthenticated.
func (s *Server) serveVersions(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"v1": "/redfish/v1/"}, false)
}

// serveRoot is the ServiceRoot, unauthenticated: clients discover everything from here.
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeResource(w, http.StatusOK, map[string]any{
		"@odata.id":      "/redfish/v1/",
		"@odata.type":    "#ServiceRoot.v1_15_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": redfishVersion,
		"UUID":           uuid("service/" + s.cfg.ChassisID),
		"Vendor":         "imaged",
		"Product":        "imaged virtual chassis BMC",
		"Systems":        link("/redfish/v1/Systems"),
		"Managers":       link("/redfish/v1/Managers"),
		"Chassis":        link("/redfish/v1/Chassis"),
		"SessionService": link("/redfish/v1/SessionService"),
		"Links":          map[string]any{"Sessions": link(sessionsPath)},
	})
}

// serveOData is the OData service document (DSP0266 "OData service document"),
// unauthenticated like the service root.
func (s *Server) serveOData(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	var value []any
	for _, n := range []string{"Systems", "Managers", "Chassis", "SessionService"} {
		value = append(value, map[string]any{"name": n, "kind": "Singleton", "url": "/redfish/v1/" + n})
	}
	writeJSON(w, http.StatusOK, map[string]any{"@odata.context": "/redfish/v1/$metadata", "value": value}, false)
}

func (s *Server) serveSystems(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeResource(w, http.StatusOK, collection("/redfish/v1/Systems", "ComputerSystemCollection", "Computer System Collection", s.systemPaths()))
}

// nicID is the Id of a system's one EthernetInterface.
const nicID = "NIC1"

func (sys *system) serveNICs(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	p := sys.path + "/EthernetInterfaces"
	writeResource(w, http.StatusOK, collection(p, "EthernetInterfaceCollection", "Ethernet Interface Collection", []string{p + "/" + nicID}))
}

func (sys *system) serveNIC(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	if r.PathValue("nic") != nicID {
		errMissing(w, r)
		return
	}
	mac := strings.ToUpper(sys.blade.MAC().String())
	writeResource(w, http.StatusOK, map[string]any{
		"@odata.id":           sys.path + "/EthernetInterfaces/" + nicID,
		"@odata.type":         "#EthernetInterface.v1_9_0.EthernetInterface",
		"Id":                  nicID,
		"Name":                "Ethernet Interface",
		"MACAddress":          mac,
		"PermanentMACAddress": mac,
		"InterfaceEnabled":    true,
		"Status":              map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

func (s *Server) managerPath() string { return "/redfish/v1/Managers/" + s.cfg.ChassisID }
func (s *Server) chassisPath() string { return "/redfish/v1/Chassis/" + s.cfg.ChassisID }

func (s *Server) systemPaths() []string {
	var out []string
	for _, sys := range s.order {
		out = append(out, sys.path)
	}
	return out
}

func (s *Server) serveManagers(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeResource(w, http.StatusOK, collection("/redfish/v1/Managers", "ManagerCollection", "Manager Collection", []string{s.managerPath()}))
}

// chassisResource serves a resource of the chassis itself, its Manager or its Chassis: GET only,
// and the chassis ID is the only {id} there is.
func (s *Server) chassisResource(doc func() map[string]any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet) {
			return
		}
		if r.PathValue("id") != s.cfg.ChassisID {
			errMissing(w, r)
			return
		}
		writeResource(w, http.StatusOK, doc())
	}
}

// manager is the chassis manager that manages every system: the enclosure manager of a blade
// chassis (Manager.ManagerType EnclosureManager), as on a real chassis.
func (s *Server) manager() map[string]any {
	return map[string]any{
		"@odata.id":       s.managerPath(),
		"@odata.type":     "#Manager.v1_18_0.Manager",
		"Id":              s.cfg.ChassisID,
		"Name":            "Chassis manager " + s.cfg.ChassisID,
		"ManagerType":     "EnclosureManager",
		"Manufacturer":    "imaged",
		"Model":           "virtual chassis BMC",
		"FirmwareVersion": s.cfg.FirmwareVersion,
		"UUID":            uuid("manager/" + s.cfg.ChassisID),
		"PowerState":      "On",
		"Status":          map[string]any{"State": "Enabled", "Health": "OK"},
		"Links": map[string]any{
			"ManagerForServers":             links(s.systemPaths()...),
			"ManagerForServers@odata.count": len(s.order),
			"ManagerForChassis":             links(s.chassisPath()),
			"ManagerInChassis":              link(s.chassisPath()),
		},
	}
}

func (s *Server) serveChassisCollection(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeResource(w, http.StatusOK, collection("/redfish/v1/Chassis", "ChassisCollection", "Chassis Collection", []string{s.chassisPath()}))
}

func (s *Server) chassis() map[string]any {
	return map[string]any{
		"@odata.id":    s.chassisPath(),
		"@odata.type":  "#Chassis.v1_23_0.Chassis",
		"Id":           s.cfg.ChassisID,
		"Name":         "Chassis " + s.cfg.ChassisID,
		"ChassisType":  "Enclosure",
		"Manufacturer": "imaged",
		"Model":        "virtual chassis",
		"UUID":         uuid("chassis/" + s.cfg.ChassisID),
		"PowerState":   "On",
		"Status":       map[string]any{"State": "Enabled", "Health": "OK"},
		"Links": map[string]any{
			"ComputerSystems":             links(s.systemPaths()...),
			"ComputerSystems@odata.count": len(s.order),
			"ManagedBy":                   links(s.managerPath()),
		},
	}
}
