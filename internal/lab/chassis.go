package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imaged/imaged/internal/atomicfile"
	"github.com/imaged/imaged/internal/lab/vbmc"
	"github.com/imaged/imaged/internal/redfish"
)

// A virtual chassis: the lab network, N QEMU blades that are Off until their BMC powers them
// on, a Redfish emulator (the chassis manager, "ms1") in front of them, and an `imaged serve`
// wired to it, all left running in the background by `imaged lab up` and removed by
// `imaged lab down`. Its state file, Dir/lab.json, lists everything up created.

// ChassisPrefix names the chassis's namespaces (imlab-srv, imlab-cli).
const ChassisPrefix = "imlab"

// BMCPort is the Redfish emulator's HTTPS port on ServerIP, inside the server namespace.
const BMCPort = 8443

// ChassisOptions configure ChassisUp.
type ChassisOptions struct {
	Dir       string // created by up, removed whole by down
	CacheDir  string // Debian's kernel package, kept between runs (never removed)
	Imaged    string // the static imaged binary
	Blades    int
	Firmware  string // bios (default) or uefi
	DiskMiB   int    // each blade's sparse disk, default 1024
	LogLevel  string // imaged's, default info
	ExtraYAML string // appended to imaged's config
}

// ChassisBlade is one blade of the chassis.
type ChassisBlade struct {
	ID       string `json:"id"`
	MAC      string `json:"mac"`
	IP       string `json:"ip"`
	Tap      string `json:"tap"`
	Disk     string `json:"disk"`
	Firmware string `json:"firmware"`
}

// Chassis is the state file of a chassis that is up.
type Chassis struct {
	Dir         string         `json:"dir"`
	Prefix      string         `json:"prefix"`
	Imaged      string         `json:"imaged"`
	Blades      []ChassisBlade `json:"blades"`
	Config      string         `json:"config"`
	BMCURL      string         `json:"bmc_url"`
	CAFile      string         `json:"ca_file"`
	CertFile    string         `json:"cert_file"`
	KeyFile     string         `json:"key_file"`
	Credentials string         `json:"credentials"`
	EmulatorPID int            `json:"emulator_pid"`
	DaemonPID   int            `json:"daemon_pid"`
	Created     time.Time      `json:"created"`

	exits map[int]chan error // how the processes this process started ended
}

func statePath(dir string) string { return filepath.Join(dir, "lab.json") }

// BladeID names the i-th blade (from 0) like a Moonshot cartridge node: ms1-c1n1 … ms1-c1n4,
// ms1-c2n1, …
func BladeID(i int) string { return fmt.Sprintf("ms1-c%dn%d", i/4+1, i%4+1) }

// LoadChassis reads the state file of the chassis in dir.
func LoadChassis(dir string) (*Chassis, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: no chassis in %s (imaged lab up creates one): %w", dir, err)
	}
	if err != nil {
		return nil, err
	}
	c := new(Chassis)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", statePath(dir), err)
	}
	return c, nil
}

func (c *Chassis) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(statePath(c.Dir), b, 0o644)
}

// Network is the chassis's namespaces.
func (c *Chassis) Network() *Network {
	return &Network{Prefix: c.Prefix, SrvIP: ServerIP, CliIP: BridgeIP}
}

// ControlSocket is the running imaged's control socket (the host reaches the API through it).
func (c *Chassis) ControlSocket() string { return filepath.Join(c.Dir, "state", "control.sock") }

// ChassisUp builds and starts a chassis in o.Dir, which must not exist or be empty. On error it
// removes what it made.
func ChassisUp(ctx context.Context, o ChassisOptions, out io.Writer) (_ *Chassis, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: a chassis needs root (network namespaces, taps)")
	}
	if o.Blades < 1 || o.Blades > 45 {
		return nil, fmt.Errorf("lab: %d blades: a chassis holds 1 to 45", o.Blades)
	}
	if o.Firmware == "" {
		o.Firmware = "bios"
	}
	if o.DiskMiB == 0 {
		o.DiskMiB = 1024
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
		if _, lerr := LoadChassis(o.Dir); lerr == nil {
			return nil, fmt.Errorf("lab: a chassis is already up in %s (imaged lab status; imaged lab down)", o.Dir)
		}
		return nil, fmt.Errorf("lab: %s exists and is not empty; choose another -dir (down removes the whole directory)", o.Dir)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &Chassis{Dir: o.Dir, Prefix: ChassisPrefix, Imaged: o.Imaged, Created: time.Now().UTC(),
		BMCURL: fmt.Sprintf("https://%s:%d", ServerIP, BMCPort)}
	defer func() {
		if err != nil {
			_ = c.down(io.Discard)
		}
	}()
	// Save first, so that down can clean up after a half-made chassis.
	if err := c.save(); err != nil {
		return nil, err
	}
	l := New(o.Dir, o.Imaged, c.Prefix, out)
	if err := l.PrepareAssets(ctx, o.CacheDir); err != nil {
		return nil, err
	}
	if l.Net.Exists() {
		return nil, fmt.Errorf("lab: namespaces %s and %s exist: another chassis is up (imaged lab down -dir …)", l.Net.Srv(), l.Net.Cli())
	}
	if err := l.Net.Up(); err != nil {
		return nil, err
	}
	for _, d := range []string{"disks", "console", "bmc"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	var blades []Blade
	for i := range o.Blades {
		tap, err := l.Net.AddTap()
		if err != nil {
			return nil, err
		}
		b := ChassisBlade{ID: BladeID(i), MAC: fmt.Sprintf("52:54:00:99:%02x:%02x", 1+i/200, 0x11+i%200), IP: fmt.Sprintf("10.99.0.%d", 11+i),
			Tap: tap, Disk: filepath.Join(o.Dir, "disks", BladeID(i)+".raw"), Firmware: o.Firmware}
		if err := sparseFile(b.Disk, int64(o.DiskMiB)<<20); err != nil {
			return nil, err
		}
		c.Blades = append(c.Blades, b)
		blades = append(blades, Blade{ID: b.ID, MAC: b.MAC, IP: b.IP, Firmware: b.Firmware})
	}
	if c.CAFile, c.CertFile, c.KeyFile, err = vbmc.GenerateCA(filepath.Join(o.Dir, "bmc"), []string{ServerIP}); err != nil {
		return nil, err
	}
	c.Credentials = filepath.Join(o.Dir, "bmc", "credentials")
	if err := os.WriteFile(c.Credentials, []byte("username: admin\npassword: "+randomHex(12)+"\n"), 0o600); err != nil {
		return nil, err
	}
	if c.Config, err = l.WriteConfig(Config{Mode: "server", Blades: blades, LogLevel: o.LogLevel, ExtraYAML: o.ExtraYAML,
		BMC: &BMCRef{Name: "ms1", URL: c.BMCURL, CAFile: c.CAFile, Credentials: c.Credentials}}); err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	if err := c.startWait(ctx, "bmc.log", &c.EmulatorPID, c.bmcReady(), "lab", "bmc", "-dir", o.Dir); err != nil {
		return nil, err
	}
	if err := c.startWait(ctx, "imaged.log", &c.DaemonPID, c.daemonReady(), "serve", "-config", c.Config); err != nil {
		return nil, err
	}
	return c, nil
}

func sparseFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// background starts `imaged args…` in the server namespace, in its own session so that it
// outlives the command that started it, with its output appended to Dir/logName.
func (c *Chassis) background(logName string, args ...string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(c.Dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// `ip netns exec` execs the program in place: the pid is imaged's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", c.Network().Srv(), c.Imaged}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("lab: start imaged %s: %w", args[0], err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reap it if it dies while this process still runs
	if c.exits == nil {
		c.exits = map[int]chan error{}
	}
	c.exits[pid] = exited
	return pid, nil
}

// startWait starts `imaged args…` and waits until ready says it serves. A start that dies at
// once is tried once more (it has been seen, rarely, right after another chassis went down),
// with how it ended in the log.
func (c *Chassis) startWait(ctx context.Context, logName string, pid *int, ready func() error, args ...string) error {
	var err error
	for attempt := 1; attempt <= 2; attempt++ {
		if *pid, err = c.background(logName, args...); err != nil {
			return err
		}
		if err = c.save(); err != nil {
			return err
		}
		if err = c.wait(ctx, *pid, logName, ready); err == nil || !errors.Is(err, errExited) {
			return err
		}
		if f, ferr := os.OpenFile(filepath.Join(c.Dir, logName), os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
			fmt.Fprintf(f, "# lab: %v; starting it again\n", err)
			f.Close()
		}
	}
	return err
}

var errExited = errors.New("exited at start-up")

// alive reports whether pid is one of this chassis's imaged processes (not a recycled pid).
func (c *Chassis) alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			return false
		}
	}
	// While `ip netns exec` execs imaged in its place, the process's command line reads empty
	// for a moment: it is alive. (Taking that moment for an exit started a second imaged beside
	// the first, which then could not open the state file.)
	return len(cmdline) == 0 || strings.Contains(string(cmdline), c.Dir)
}

func (c *Chassis) httpsClient() (*http.Client, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:     Dialer(c.Network().Srv()),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}, nil
}

// bmcReady answers whether the emulator serves its service root.
func (c *Chassis) bmcReady() func() error {
	hc, err := c.httpsClient()
	return func() error {
		if err != nil {
			return err
		}
		return getOK(hc, c.BMCURL+"/redfish/v1/")
	}
}

// daemonReady answers whether imaged serves /healthz.
func (c *Chassis) daemonReady() func() error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: Dialer(c.Network().Srv())}}
	return func() error { return getOK(hc, BaseURL()+"/healthz") }
}

// getOK is a readiness check: a GET of url through hc answers 200.
func getOK(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// wait polls ready for 30 s while pid lives.
func (c *Chassis) wait(ctx context.Context, pid int, logName string, ready func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: no answer within 30 s (%v); see %s", err, filepath.Join(c.Dir, logName))
		}
		if !c.alive(pid) {
			how := "not running"
			if exited, ok := c.exits[pid]; ok {
				// Started by this process: it has ended only once Wait says so.
				select {
				case werr := <-exited:
					how = fmt.Sprint(werr)
				case <-time.After(time.Second):
					continue
				}
			}
			log, _ := os.ReadFile(filepath.Join(c.Dir, logName))
			return fmt.Errorf("lab: imaged (pid %d) %w (%s):\n%s", pid, errExited, how, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ChassisDown stops the chassis in dir and removes everything up created: its processes (and
// with the emulator every blade's QEMU), its namespaces, and dir. Nothing else is touched.
func ChassisDown(dir string, out io.Writer) error {
	c, err := LoadChassis(dir)
	if err != nil {
		return err
	}
	return c.down(out)
}

func (c *Chassis) down(out io.Writer) error {
	var errs []error
	// imaged first (it may be talking to the BMC), then the emulator, which powers its blades off.
	for _, p := range []struct {
		name string
		pid  int
	}{{"imaged serve", c.DaemonPID}, {"BMC emulator", c.EmulatorPID}} {
		if err := c.stop(p.pid); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		} else if p.pid > 0 {
			fmt.Fprintf(out, "lab: stopped %s (pid %d)\n", p.name, p.pid)
		}
	}
	// A QEMU left behind (an emulator killed with SIGKILL) runs in the client namespace.
	if pids, _ := exec.Command("ip", "netns", "pids", c.Network().Cli()).Output(); len(pids) > 0 {
		for _, f := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	c.Network().Down()
	fmt.Fprintf(out, "lab: removed namespaces %s-srv and %s-cli\n", c.Prefix, c.Prefix)
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(out, "lab: removed %s\n", c.Dir)
	}
	return errors.Join(errs...)
}

// stop sends SIGTERM and waits up to 20 s, then SIGKILL.
func (c *Chassis) stop(pid int) error {
	if !c.alive(pid) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for range 200 {
		if !c.alive(pid) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	if c.alive(pid) {
		return fmt.Errorf("pid %d survived SIGKILL", pid)
	}
	return fmt.Errorf("pid %d did not stop within 20 s of SIGTERM; killed", pid)
}

// ChassisStatus is what `imaged lab status` shows.
type ChassisStatus struct {
	Chassis      *Chassis
	EmulatorUp   bool
	DaemonUp     bool
	NamespacesUp bool
	Power        map[string]string // blade id → power state, from the emulator
}

// Status reads the chassis's processes and asks the emulator for every blade's power state.
func (c *Chassis) Status(ctx context.Context) (ChassisStatus, error) {
	st := ChassisStatus{Chassis: c, EmulatorUp: c.alive(c.EmulatorPID), DaemonUp: c.alive(c.DaemonPID),
		NamespacesUp: c.Network().Exists(), Power: map[string]string{}}
	if !st.EmulatorUp || !st.NamespacesUp {
		return st, nil
	}
	hc, err := c.httpsClient()
	if err != nil {
		return st, err
	}
	cred, err := redfish.LoadCredentials(c.Credentials)
	if err != nil {
		return st, err
	}
	for _, b := range c.Blades {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.BMCURL+"/redfish/v1/Systems/"+b.ID, nil)
		req.SetBasicAuth(cred.Username, cred.Password)
		resp, err := hc.Do(req)
		if err != nil {
			st.Power[b.ID] = "unknown (" + err.Error() + ")"
			continue
		}
		var sys struct{ PowerState string }
		json.NewDecoder(resp.Body).Decode(&sys)
		resp.Body.Close()
		st.Power[b.ID] = sys.PowerState
	}
	return st, nil
}

// RunEmulator is the body of `imaged lab bmc`: the chassis's Redfish service with a PowerVM per
// blade, in the server namespace, until ctx ends; then every blade is powered off.
func RunEmulator(ctx context.Context, dir string, log *slog.Logger) error {
	c, err := LoadChassis(dir)
	if err != nil {
		return err
	}
	cred, err := redfish.LoadCredentials(c.Credentials)
	if err != nil {
		return err
	}
	var blades []vbmc.Blade
	var vms []*PowerVM
	defer func() {
		for _, vm := range vms {
			vm.Close()
		}
	}()
	for _, b := range c.Blades {
		vm, err := NewPowerVM(VM{Name: b.ID, Netns: c.Network().Cli(), Tap: b.Tap, MAC: b.MAC, Firmware: b.Firmware,
			Disk: b.Disk, Dir: filepath.Join(dir, "console")})
		if err != nil {
			return err
		}
		vms = append(vms, vm)
		blades = append(blades, vm)
	}
	srv, err := vbmc.New(vbmc.Config{Addr: fmt.Sprintf("%s:%d", ServerIP, BMCPort), CertFile: c.CertFile, KeyFile: c.KeyFile,
		Username: cred.Username, Password: cred.Password, ChassisID: "ms1"}, blades, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// KillDaemon kills the chassis's imaged with SIGKILL (no draining: what a crash or an OOM kill
// does) and starts it again from the same config, for crash-safety tests.
func (c *Chassis) KillDaemon(ctx context.Context) error {
	if !c.alive(c.DaemonPID) {
		return fmt.Errorf("lab: imaged (pid %d) is not running", c.DaemonPID)
	}
	if err := syscall.Kill(c.DaemonPID, syscall.SIGKILL); err != nil {
		return err
	}
	for i := 0; c.alive(c.DaemonPID); i++ {
		if i == 100 {
			return fmt.Errorf("lab: imaged (pid %d) survived SIGKILL for 10 s", c.DaemonPID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// StartDaemon starts the chassis's imaged again (after KillDaemon) and waits until it serves.
func (c *Chassis) StartDaemon(ctx context.Context) error {
	return c.startWait(ctx, "imaged.log", &c.DaemonPID, c.daemonReady(), "serve", "-config", c.Config)
}
