// Package ipxe serves what iPXE loads over HTTP: a per-machine script at /boot/{mac}.ipxe and the
// boot assets (kernel, initramfs, iPXE binaries for UEFI HTTP boot) under /boot/assets/.
//
// A machine's script follows its profile: "agent" netboots imaged's agent with a fresh per-boot
// token on its kernel command line, "local" boots the local disk, and any other name renders an
// operator's template. The package is a leaf: it reaches the inventory and the token store
// through the small interfaces below, which cmd/imaged implements.
package ipxe

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Machine is what the script needs to know about a blade.
type Machine struct {
	ID          string
	MAC         net.HardwareAddr
	Profile     string
	Hostname    string
	WorkerGroup string
	WorkerType  string
}

// Inventory finds the machine a MAC belongs to. ok is false for unknown MACs.
type Inventory interface {
	ByMAC(mac net.HardwareAddr) (m Machine, ok bool)
}

// Tokens issues the per-boot token that the agent presents in its hello, for a script fetched
// from remote. An error that wraps ErrRefused means this client may not have one (the script is
// refused with 403); any other is the server's failure.
type Tokens interface {
	Issue(m Machine, remote netip.Addr) (token string, err error)
}

// ErrRefused marks a token refused to the client that asked (it does not hold the machine's
// address, say).
var ErrRefused = errors.New("boot token refused")

// Observer hears of every script and asset served, for the machines' timelines.
type Observer interface {
	ScriptServed(m Machine, remote string)
	AssetServed(name, remote string, status int, bytes int64, d time.Duration)
}

// Agent names the agent's kernel and initramfs in the asset roots.
type Agent struct {
	Kernel, Initrd, Cmdline string
}

// Config configures the handler.
type Config struct {
	PublicURL *url.URL // how blades reach this server over plain HTTP
	// HTTPSURL is the HTTPS listener's URL, nil without one. The agent is sent there (with
	// TLSPin); a script fetched over HTTPS points at its kernel and initramfs there too.
	HTTPSURL       *url.URL
	TLSPin         string            // the HTTPS certificate's SHA-256, hex: the agent refuses any other
	Roots          []string          // asset directories, searched in order
	Agent          Agent             // the agent profile's payload
	Profiles       map[string]string // custom profiles: name → iPXE template
	UnknownProfile string            // profile for MACs not in the inventory; "" answers 404
}

// Deps are the handler's collaborators.
type Deps struct {
	Inventory  Inventory
	Tokens     Tokens
	Observer   Observer // may be nil
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Handler serves /boot/.
type Handler struct {
	cfg     Config
	deps    Deps
	roots   []*os.Root
	tmpl    map[string]*template.Template
	metrics *metrics
}

// New opens the asset roots and parses the profiles.
func New(cfg Config, deps Deps) (*Handler, error) {
	if cfg.PublicURL == nil {
		return nil, errors.New("boot: a public URL is required")
	}
	if deps.Inventory == nil || deps.Tokens == nil || deps.Log == nil {
		return nil, errors.New("boot: Inventory, Tokens and Log are required")
	}
	h := &Handler{cfg: cfg, deps: deps, tmpl: map[string]*template.Template{}}
	for _, dir := range cfg.Roots {
		r, err := os.OpenRoot(dir)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("boot: asset directory: %w", err)
		}
		h.roots = append(h.roots, r)
	}
	builtin := map[string]string{ProfileAgent: agentScript, ProfileLocal: localScript}
	for name, text := range builtin {
		h.tmpl[name] = template.Must(template.New(name).Parse(text))
	}
	for name, text := range cfg.Profiles {
		if _, clash := builtin[name]; clash {
			return nil, fmt.Errorf("boot: profile %q is built in", name)
		}
		t, err := template.New(name).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("boot: profile %q: %w", name, err)
		}
		h.tmpl[name] = t
	}
	if cfg.UnknownProfile != "" && h.tmpl[cfg.UnknownProfile] == nil {
		return nil, fmt.Errorf("boot: unknown-client profile %q does not exist", cfg.UnknownProfile)
	}
	h.metrics = newMetrics(deps.Registerer)
	return h, nil
}

// Close releases the asset roots.
func (h *Handler) Close() {
	for _, r := range h.roots {
		r.Close()
	}
}

// Built-in profiles.
const (
	ProfileAgent = "agent"
	ProfileLocal = "local"
)

// ScriptURL is where iPXE on mac fetches its script; the DHCP server hands it out.
func ScriptURL(base *url.URL, mac net.HardwareAddr) string {
	return base.JoinPath("boot", mac.String()+".ipxe").String()
}

// AssetURL is the URL of a boot asset.
func AssetURL(base *url.URL, name string) string {
	return base.JoinPath("boot", "assets", name).String()
}

// ServeHTTP routes /boot/{mac}.ipxe and /boot/assets/{name}.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/boot/assets/"):
		h.serveAsset(w, r, strings.TrimPrefix(p, "/boot/assets/"))
	case strings.HasPrefix(p, "/boot/") && strings.HasSuffix(p, ".ipxe") && !strings.Contains(p[len("/boot/"):], "/"):
		h.serveScript(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/boot/"), ".ipxe"))
	default:
		http.NotFound(w, r)
	}
}

// ParseMAC accepts the forms a MAC takes in a URL: 52:54:00:99:00:11, 52-54-00-99-00-11 and
// 525400990011.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) == 12 && !strings.ContainsAny(s, ":-.") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%q is not an Ethernet MAC address", s)
	}
	return mac, nil
}

// scriptData is what a script template sees. URL is the base the script was fetched from (its
// kernel and initramfs come from there); AgentURL is where the agent talks to imaged (the HTTPS
// listener when there is one) and TLSPin the certificate it must find there.
type scriptData struct {
	URL, Kernel, Initrd, KernelName, InitrdName, Cmdline, Token string
	AgentURL, TLSPin                                            string
	Machine                                                     Machine
	MAC                                                         string
	Issued                                                      string
}

func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request, macText string) {
	mac, err := ParseMAC(macText)
	if err != nil {
		h.metrics.scripts.WithLabelValues("bad_request").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m, ok := h.deps.Inventory.ByMAC(mac)
	if !ok {
		if h.cfg.UnknownProfile == "" {
			h.metrics.scripts.WithLabelValues("unknown_mac").Inc()
			h.deps.Log.Info("boot script refused: MAC not in the inventory", "mac", mac.String(), "remote", r.RemoteAddr)
			http.Error(w, "MAC not in the inventory", http.StatusNotFound)
			return
		}
		m = Machine{MAC: mac, Profile: h.cfg.UnknownProfile}
	}
	m.MAC = mac
	t := h.tmpl[m.Profile]
	if t == nil {
		h.metrics.scripts.WithLabelValues("error").Inc()
		h.deps.Log.Error("boot script: machine has an undefined profile", "machine", m.ID, "profile", m.Profile)
		http.Error(w, "profile not defined", http.StatusInternalServerError)
		return
	}
	base, agent := h.cfg.PublicURL, h.cfg.PublicURL
	if h.cfg.HTTPSURL != nil {
		agent = h.cfg.HTTPSURL
		if r.TLS != nil { // an iPXE that trusts imaged's certificate: everything over HTTPS
			base = h.cfg.HTTPSURL
		}
	}
	d := scriptData{
		URL:        strings.TrimSuffix(base.String(), "/"),
		AgentURL:   strings.TrimSuffix(agent.String(), "/"),
		TLSPin:     h.cfg.TLSPin,
		Kernel:     AssetURL(base, h.cfg.Agent.Kernel),
		Initrd:     AssetURL(base, h.cfg.Agent.Initrd),
		KernelName: path.Base(h.cfg.Agent.Kernel),
		InitrdName: path.Base(h.cfg.Agent.Initrd),
		Cmdline:    h.cfg.Agent.Cmdline,
		Machine:    m,
		MAC:        mac.String(),
		Issued:     time.Now().UTC().Format(time.RFC3339),
	}
	if m.Profile == ProfileAgent {
		remote, _ := netip.ParseAddrPort(r.RemoteAddr)
		if d.Token, err = h.deps.Tokens.Issue(m, remote.Addr().Unmap()); errors.Is(err, ErrRefused) {
			h.metrics.scripts.WithLabelValues("refused").Inc()
			h.deps.Log.Warn("boot script refused", "machine", m.ID, "mac", mac.String(), "remote", r.RemoteAddr, "err", err)
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		} else if err != nil {
			h.metrics.scripts.WithLabelValues("error").Inc()
			h.deps.Log.Error("boot script: cannot issue a boot token", "machine", m.ID, "err", err)
			http.Error(w, "cannot issue a boot token", http.StatusInternalServerError)
			return
		}
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		h.metrics.scripts.WithLabelValues("error").Inc()
		h.deps.Log.Error("boot script: template failed", "profile", m.Profile, "err", err)
		http.Error(w, "template failed", http.StatusInternalServerError)
		return
	}
	h.metrics.scripts.WithLabelValues(m.Profile).Inc()
	h.deps.Log.Info("boot script served", "machine", m.ID, "mac", mac.String(), "profile", m.Profile, "remote", r.RemoteAddr)
	if h.deps.Observer != nil {
		h.deps.Observer.ScriptServed(m, r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// The agent's script. initrd=<name> on the command line is needed on UEFI, where the kernel's EFI
// stub loads the initrd by that name (lab README P7); it does no harm on BIOS. With an HTTPS
// listener the agent is sent there with the certificate's SHA-256 (imaged.tls_sha256=), which it
// pins: it has no CA to check a chain against and no clock to trust.
const agentScript = `#!ipxe
# imaged: machine {{.Machine.ID}} ({{.MAC}}), profile agent, issued {{.Issued}}
echo imaged: netbooting the agent on {{.Machine.ID}} ({{.MAC}})
kernel {{.Kernel}} initrd={{.InitrdName}} imaged.server={{.AgentURL}}{{with .TLSPin}} imaged.tls_sha256={{.}}{{end}} imaged.token={{.Token}} imaged.mac={{.MAC}} {{.Cmdline}}
initrd {{.Initrd}}
boot
`

// Local boot. On UEFI, exit returns to the firmware, which goes on to the next boot option (the
// disk). On BIOS, sanboot of drive 0x80 boots the first hard disk; if that fails, exit hands back
// to the BIOS boot order.
const localScript = `#!ipxe
# imaged: machine {{.Machine.ID}} ({{.MAC}}), profile local, issued {{.Issued}}
echo imaged: booting the local disk of {{.Machine.ID}}
iseq ${platform} efi && exit ||
sanboot --no-describe --drive 0x80 || exit
`
