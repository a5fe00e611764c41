package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/lab/vbmc"
)

// PowerVM is a QEMU blade under a BMC's control: it implements vbmc.Blade. Every power-on is
// a cold boot in a new QEMU process, and that process's life is the machine's power state: a
// running process is On, an exited one (killed, crashed, or the guest powered off) is Off.
// Guest-initiated reboots keep it On (QEMU runs without -no-reboot). The console of every
// power-on is appended to one file, Dir/Name.log, with a marker line at each power-on and exit.
//
// A QMP socket (QMPPath: Dir/Name.qmp) carries the ACPI power button (system_powerdown) and
// status queries. All methods are safe for concurrent use; PowerOn and ForceOff are serialised,
// while GracefulShutdown only waits, so that a ForceOff can end its wait.
type PowerVM struct {
	vm  VM
	mac net.HardwareAddr
	qmp string

	life  context.Context // QEMU processes are killed when it ends (Close)
	close context.CancelFunc

	op      sync.Mutex // serialises PowerOn, ForceOff and Close
	mu      sync.Mutex // guards run, watched, forced and closed
	run     *Running
	watched chan struct{} // closed once run's exit is noted in the console file
	forced  bool          // run is being killed by ForceOff
	closed  bool
	qmpMu   sync.Mutex // QEMU's QMP socket serves one client at a time
}

var (
	_ vbmc.Blade     = (*PowerVM)(nil)
	_ vbmc.BootModer = (*PowerVM)(nil)
)

// ErrPoweredOn is returned by PowerOn when the blade is already on.
var ErrPoweredOn = errors.New("lab: blade is already powered on")

// Default waits, when the caller's context has no deadline.
const (
	startTimeout = 20 * time.Second // QEMU answering on QMP after a power-on
	offTimeout   = 10 * time.Second // QEMU gone after SIGKILL
)

// NewPowerVM returns a blade that is Off. vm describes the machine (Name is its Redfish Id;
// Netns, Tap, MAC and Dir are required); the boot-related fields of vm are set per power-on.
func NewPowerVM(vm VM) (*PowerVM, error) {
	var errs []error
	if vm.Name == "" || vm.Netns == "" || vm.Tap == "" || vm.Dir == "" {
		errs = append(errs, errors.New("name, namespace, tap and directory are required"))
	}
	mac, err := net.ParseMAC(vm.MAC)
	if err != nil {
		errs = append(errs, err)
	}
	if vm.Dir != "" {
		if st, err := os.Stat(vm.Dir); err != nil {
			errs = append(errs, err)
		} else if !st.IsDir() {
			errs = append(errs, fmt.Errorf("%s is not a directory", vm.Dir))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lab: power VM %s: %w", vm.Name, err)
	}
	qmp := filepath.Join(vm.Dir, vm.Name+".qmp")
	// sockaddr_un holds 108 bytes: a deep directory gets its socket in /tmp under a stable name.
	if len(qmp) > 100 {
		sum := sha256.Sum256([]byte(qmp))
		qmp = filepath.Join(os.TempDir(), "imaged-qmp-"+hex.EncodeToString(sum[:6])+".sock")
	}
	p := &PowerVM{vm: vm, mac: mac, qmp: qmp}
	p.life, p.close = context.WithCancel(context.Background())
	return p, nil
}

// ID is the blade's Redfish Id, its VM name.
func (p *PowerVM) ID() string { return p.vm.Name }

// MAC is the address of the blade's NIC.
func (p *PowerVM) MAC() net.HardwareAddr { return p.mac }

// BootMode is "Legacy" for SeaBIOS blades and "UEFI" for OVMF ones (vbmc.BootModer).
func (p *PowerVM) BootMode() string {
	if p.vm.Firmware == "uefi" {
		return "UEFI"
	}
	return "Legacy"
}

// ConsolePath is the blade's console across power cycles.
func (p *PowerVM) ConsolePath() string { return filepath.Join(p.vm.Dir, p.vm.Name+".log") }

// QMPPath is the blade's QMP socket (it exists while QEMU runs).
func (p *PowerVM) QMPPath() string { return p.qmp }

// current is the running QEMU, or nil when the blade is off.
func (p *PowerVM) current() *Running {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return nil
	}
	select {
	case <-p.run.Done():
		return nil
	default:
		return p.run
	}
}

// PowerState is On while the QEMU process runs.
func (p *PowerVM) PowerState() vbmc.PowerState {
	if p.current() != nil {
		return vbmc.StateOn
	}
	return vbmc.StateOff
}

// Running is the current QEMU (its console lines, WaitFor), or nil when the blade is off.
func (p *PowerVM) Running() *Running { return p.current() }

// PID is the QEMU process's id, or 0 when the blade is off.
func (p *PowerVM) PID() int {
	if r := p.current(); r != nil {
		return r.cmd.Process.Pid
	}
	return 0
}

// bootArg maps a power-on's boot source onto QEMU's -boot. once= holds until the first reset,
// after which QEMU restores order=, so a guest that reboots after a PXE-once boot boots its
// disk, as with a real BMC's one-time override. SeaBIOS honours these; OVMF follows its own
// boot options (with no disk it falls back to the network anyway).
func bootArg(b vbmc.Boot) string {
	switch b.Source {
	case vbmc.BootPxe, vbmc.BootUefiHttp:
		if b.Persistent {
			return "order=n"
		}
		return "once=n,order=c"
	default:
		return "order=c"
	}
}

// PowerOn starts QEMU booting as b says and returns once it answers on QMP with its status
// running: a process that starts and dies at once (a busy tap, a bad disk) is an error here,
// not a machine that is On. ctx bounds the wait (20 s without a deadline); QEMU itself lives
// until ForceOff, Close, or the guest powering off.
func (p *PowerVM) PowerOn(ctx context.Context, b vbmc.Boot) error {
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("lab: power on %s: closed", p.vm.Name)
	}
	if p.current() != nil {
		return fmt.Errorf("lab: power on %s: %w", p.vm.Name, ErrPoweredOn)
	}
	p.mu.Lock()
	watched := p.watched
	p.mu.Unlock()
	if watched != nil {
		<-watched // the last run's exit marker goes before this run's lines
	}
	if err := os.Remove(p.qmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab: power on %s: stale QMP socket: %w", p.vm.Name, err)
	}
	vm := p.vm
	vm.Boot, vm.Reboot, vm.QMP, vm.AppendLog = bootArg(b), true, p.qmp, true
	p.marker("power on (boot %s, qemu -boot %s)", b.Source, vm.Boot)
	r, err := vm.Start(p.life)
	if err != nil {
		return fmt.Errorf("lab: power on %s: %w", p.vm.Name, err)
	}
	watched = make(chan struct{})
	p.mu.Lock()
	p.run, p.watched, p.forced = r, watched, false
	p.mu.Unlock()
	go p.watch(r, watched)

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	for {
		var st struct{ Status string }
		err := p.execute(ctx, r, "query-status", nil, &st)
		if err == nil && st.Status == "running" {
			return nil
		}
		select {
		case <-r.Done():
			return fmt.Errorf("lab: power on %s: QEMU exited at once (%v); see %s", p.vm.Name, r.exitErr(), p.ConsolePath())
		case <-ctx.Done():
			_ = r.cmd.Process.Kill()
			return fmt.Errorf("lab: power on %s: QEMU not running on QMP (%v): %w", p.vm.Name, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// watch closes a QEMU's console once it has exited and notes why in the console file.
func (p *PowerVM) watch(r *Running, watched chan struct{}) {
	defer close(watched)
	<-r.Done()
	r.log.Close()
	p.mu.Lock()
	forced := p.forced
	p.mu.Unlock()
	switch err := r.exitErr(); {
	case forced:
		p.marker("power off: ForceOff killed QEMU")
	case err == nil:
		p.marker("power off: the guest powered off (QEMU exited with status 0)")
	default:
		p.marker("power off: QEMU exited: %v", err)
	}
}

// marker appends a line to the console file, between QEMU runs.
func (p *PowerVM) marker(format string, args ...any) {
	f, err := os.OpenFile(p.ConsolePath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return // the console is best effort; QEMU's own Start reports a directory problem
	}
	defer f.Close()
	fmt.Fprintf(f, "===== %s %s: %s =====\n", time.Now().UTC().Format(time.RFC3339), p.vm.Name, fmt.Sprintf(format, args...))
}

// ForceOff cuts the power: it kills QEMU (SIGKILL; the lab's blades have nothing to flush) and
// returns once the process is gone, or when ctx ends (10 s without a deadline).
func (p *PowerVM) ForceOff(ctx context.Context) error {
	p.op.Lock()
	defer p.op.Unlock()
	return p.forceOff(ctx)
}

func (p *PowerVM) forceOff(ctx context.Context) error {
	r := p.current()
	if r == nil {
		return nil
	}
	p.mu.Lock()
	p.forced = true
	p.mu.Unlock()
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("lab: force off %s: %w", p.vm.Name, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, offTimeout)
		defer cancel()
	}
	p.mu.Lock()
	watched := p.watched
	p.mu.Unlock()
	select {
	case <-watched: // QEMU has exited and its console is closed
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lab: force off %s: QEMU (pid %d) still running: %w", p.vm.Name, r.cmd.Process.Pid, ctx.Err())
	}
}

// GracefulShutdown presses the ACPI power button (QMP system_powerdown) and waits for the
// guest to power off, which ends QEMU. A guest that ignores the button (a firmware without an
// OS does) stays on: then it returns an error wrapping ctx.Err() once ctx ends, and the blade
// is still On. Without a deadline on ctx it waits until ctx is cancelled.
func (p *PowerVM) GracefulShutdown(ctx context.Context) error {
	r := p.current()
	if r == nil {
		return nil
	}
	if err := p.execute(ctx, r, "system_powerdown", nil, nil); err != nil {
		if p.current() == nil {
			return nil // powered off meanwhile
		}
		return fmt.Errorf("lab: graceful shutdown of %s: %w", p.vm.Name, err)
	}
	select {
	case <-r.Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lab: graceful shutdown of %s: the guest did not power off: %w", p.vm.Name, ctx.Err())
	}
}

// QMP runs one QMP command on the running QEMU (for example "query-status" or "system_reset")
// and decodes its "return" into result, if not nil.
func (p *PowerVM) QMP(ctx context.Context, command string, args, result any) error {
	r := p.current()
	if r == nil {
		return fmt.Errorf("lab: qmp %s on %s: powered off", command, p.vm.Name)
	}
	return p.execute(ctx, r, command, args, result)
}

// QueryStatus is QEMU's run state: "running", "paused", "shutdown", ...
func (p *PowerVM) QueryStatus(ctx context.Context) (string, error) {
	var st struct{ Status string }
	err := p.QMP(ctx, "query-status", nil, &st)
	return st.Status, err
}

func (p *PowerVM) execute(ctx context.Context, r *Running, command string, args, result any) error {
	p.qmpMu.Lock()
	defer p.qmpMu.Unlock()
	// A command to a QEMU that has exited would otherwise wait on a socket nobody serves.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := dialQMP(ctx, p.qmp)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.execute(command, args, result)
}

// Close powers the blade off (ForceOff) and releases it; later PowerOns fail.
func (p *PowerVM) Close() error {
	p.op.Lock()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.forceOff(context.Background())
	watched := p.watched
	p.op.Unlock()
	p.close()
	if watched != nil {
		select {
		case <-watched:
		case <-time.After(offTimeout): // a QEMU that survives SIGKILL is reported by err
		}
	}
	os.Remove(p.qmp)
	return err
}

// qmpConn is a minimal QEMU Machine Protocol client: JSON objects over a unix socket, a
// greeting, capability negotiation, then commands answered by {"return": ...} or
// {"error": {"class", "desc"}}, with asynchronous {"event": ...} messages interleaved.
type qmpConn struct {
	net.Conn
	dec *json.Decoder
}

// qmpTimeout bounds one QMP exchange when ctx has no deadline.
const qmpTimeout = 10 * time.Second

func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(qmpTimeout)
	}
	c.SetDeadline(deadline)
	// Cancellation without a deadline: unblock reads and writes at once.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	q := &qmpConn{Conn: &stopConn{Conn: c, stop: stop}, dec: json.NewDecoder(c)}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		q.Close()
		return nil, fmt.Errorf("qmp: no greeting from %s: %v", path, err)
	}
	// "qmp_capabilities" leaves capabilities negotiation mode; until then QEMU accepts no
	// other command.
	if err := q.execute("qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

type stopConn struct {
	net.Conn
	stop func() bool
}

func (c *stopConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

func (q *qmpConn) execute(command string, args, result any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := q.dec.Decode(&resp); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue // e.g. POWERDOWN, RESET: not the answer
		case resp.Error != nil:
			return fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		case resp.Return == nil:
			return fmt.Errorf("qmp %s: answer without return", command)
		case result != nil:
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: %w", command, err)
			}
		}
		return nil
	}
}
