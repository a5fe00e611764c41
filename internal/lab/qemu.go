package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/imaged/imaged/internal/atomicfile"
)

// VM is one QEMU blade under TCG (KVM on these hosts is kvm_pvm, under which stock kernels hang).
type VM struct {
	Name     string // used for file names
	Netns    string // namespace holding Tap
	Tap      string
	MAC      string
	Firmware string // "bios" (SeaBIOS) or "uefi" (OVMF on q35)
	NIC      string // "virtio-net-pci" (default) or "e1000"
	// NoROM gives the NIC no option ROM (romfile=). With UEFI and virtio-net, OVMF then uses its
	// own PXE client (EDK2 PxeBcDxe, arch 7), which fetches ipxe.efi over TFTP: the real chain.
	// With a ROM, the NIC's ROM is already iPXE and the first DHCP carries user class iPXE.
	NoROM  bool
	Disk   string // raw disk image attached as virtio-blk, optional
	Memory int    // MiB, default 512
	Dir    string // where the serial log and the UEFI variable store go
	// HTTPSCACerts is a file of EFI signature lists (EDK2CACerts makes one) handed to OVMF as
	// fw_cfg "etc/edk2/https/cacerts": the CA certificates the firmware's HTTPS trusts, and an
	// iPXE that reads the firmware's store (see edk2.go) with it. UEFI only.
	HTTPSCACerts string

	// The fields below serve BMC-managed blades (PowerVM); the netboot tests leave them zero.

	// Boot is QEMU's -boot argument; empty means "n", network only.
	Boot string
	// Reboot lets a reset the guest asks for restart the machine. Without it QEMU runs with
	// -no-reboot and exits on any reset, which is how the netboot tests see a run end.
	Reboot bool
	// QMP, if set, is the path of a QMP control socket (-qmp unix:QMP,server=on,wait=off).
	QMP string
	// AppendLog appends the console to Dir/Name.log instead of truncating it, so that a blade's
	// console survives its power cycles.
	AppendLog bool
}

// Line is one line of a serial console, stamped with the time since QEMU started.
type Line struct {
	At   time.Duration
	Text string
}

// Running is a started VM.
type Running struct {
	vm    *VM
	cmd   *exec.Cmd
	start time.Time
	log   *os.File

	mu    sync.Mutex
	lines []Line
	wake  chan struct{} // closed and replaced on every new line
	done  chan struct{}
	err   error
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]|\x1bc`)

// Start boots the VM. Its console goes to Dir/Name.log; the process is killed when ctx ends.
func (vm *VM) Start(ctx context.Context) (*Running, error) {
	if vm.Memory == 0 {
		vm.Memory = 512
	}
	if vm.NIC == "" {
		vm.NIC = "virtio-net-pci"
	}
	dev := fmt.Sprintf("%s,netdev=n0,mac=%s", vm.NIC, vm.MAC)
	if vm.NoROM {
		dev += ",romfile="
	}
	boot := vm.Boot
	if boot == "" {
		boot = "n"
	}
	args := []string{"netns", "exec", vm.Netns, "qemu-system-x86_64",
		"-accel", "tcg", "-m", fmt.Sprint(vm.Memory), "-smp", "1", "-nographic", "-boot", boot,
		"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", vm.Tap), "-device", dev,
		// An entropy source: without RDRAND under TCG the guest kernel's random pool may never be
		// ready, and anything that asks for randomness early blocks.
		"-device", "virtio-rng-pci"}
	if !vm.Reboot {
		args = append(args, "-no-reboot")
	}
	if vm.QMP != "" {
		args = append(args, "-qmp", "unix:"+vm.QMP+",server=on,wait=off")
	}
	if vm.Firmware == "uefi" {
		vars := filepath.Join(vm.Dir, vm.Name+".OVMF_VARS.fd")
		if err := copyFile("/usr/share/OVMF/OVMF_VARS_4M.fd", vars); err != nil {
			return nil, fmt.Errorf("lab: UEFI variable store (apt-get install ovmf): %w", err)
		}
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
		if vm.HTTPSCACerts != "" {
			args = append(args, "-fw_cfg", "name="+edk2CACertsFWCfg+",file="+vm.HTTPSCACerts)
		}
	} else if vm.HTTPSCACerts != "" {
		return nil, fmt.Errorf("lab: %s: a CA store for HTTPS is a UEFI firmware's (fw_cfg %s); SeaBIOS has none", vm.Name, edk2CACertsFWCfg)
	}
	if vm.Disk != "" {
		args = append(args, "-drive", "file="+vm.Disk+",if=virtio,format=raw,cache=writeback")
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if vm.AppendLog {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	logf, err := os.OpenFile(filepath.Join(vm.Dir, vm.Name+".log"), flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = nil // -nographic muxes the serial console and the monitor on stdio; EOF is harmless
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 5 * time.Second
	r := &Running{vm: vm, cmd: cmd, log: logf, wake: make(chan struct{}), done: make(chan struct{})}
	fmt.Fprintf(logf, "# %s\n", cmd.String())
	r.start = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("lab: start qemu (apt-get install qemu-system-x86): %w", err)
	}
	readDone := make(chan struct{})
	go func() { r.read(pr); close(readDone) }()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-readDone // every console line is in Lines and in the log before Done closes
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		close(r.done)
	}()
	return r, nil
}

func (r *Running) read(pr io.Reader) {
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		text := ansi.ReplaceAllString(sc.Text(), "")
		text = strings.ReplaceAll(text, "\r", "")
		l := Line{At: time.Since(r.start), Text: text}
		fmt.Fprintf(r.log, "%8.3f %s\n", l.At.Seconds(), l.Text)
		r.mu.Lock()
		r.lines = append(r.lines, l)
		close(r.wake)
		r.wake = make(chan struct{})
		r.mu.Unlock()
	}
	io.Copy(io.Discard, pr)
}

// Started is when QEMU was started.
func (r *Running) Started() time.Time { return r.start }

// LogPath is the file holding the timestamped console.
func (r *Running) LogPath() string { return r.log.Name() }

// Lines returns the console so far.
func (r *Running) Lines() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Line(nil), r.lines...)
}

// ErrExited is returned by WaitFor when QEMU exits before the line appears.
var ErrExited = errors.New("qemu exited")

// WaitFor waits until a console line matches re and returns it.
func (r *Running) WaitFor(ctx context.Context, re *regexp.Regexp) (Line, error) {
	seen := 0
	for {
		r.mu.Lock()
		for ; seen < len(r.lines); seen++ {
			if re.MatchString(r.lines[seen].Text) {
				l := r.lines[seen]
				r.mu.Unlock()
				return l, nil
			}
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-r.done:
			// drain lines that arrived with the exit
			r.mu.Lock()
			n := len(r.lines)
			r.mu.Unlock()
			if seen == n {
				return Line{}, fmt.Errorf("waiting for %q on %s: %w (%v)", re, r.vm.Name, ErrExited, r.exitErr())
			}
		case <-ctx.Done():
			return Line{}, fmt.Errorf("waiting for %q on %s: %w (console: %s)", re, r.vm.Name, ctx.Err(), r.LogPath())
		}
	}
}

func (r *Running) exitErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Stop kills QEMU (the lab's blades have nothing to flush) and waits for it.
func (r *Running) Stop() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
	}
	<-r.done
	r.log.Close()
}

// Done is closed when QEMU has exited.
func (r *Running) Done() <-chan struct{} { return r.done }

// Milestone is the first console line of one boot phase.
type Milestone struct {
	Name string
	Line
}

var milestones = []struct {
	name string
	re   *regexp.Regexp
}{
	{"firmware", regexp.MustCompile(`SeaBIOS|BdsDxe|UEFI Interactive|EFI stub|iPXE \(http`)},
	{"firmware PXE (EDK2)", regexp.MustCompile(`Start PXE over IPv4|Station IP address`)},
	{"iPXE starts", regexp.MustCompile(`iPXE initialising|iPXE \(`)},
	{"iPXE script runs", regexp.MustCompile(`imaged: netbooting the agent|imaged: booting the local disk`)},
	{"kernel starts", regexp.MustCompile(`Linux version`)},
	{"agent starts", regexp.MustCompile(`imaged agent:`)},
	{"agent has an address", regexp.MustCompile(`imaged agent: .*(DHCP|lease|address)`)},
	{"agent hello accepted", regexp.MustCompile(`imaged agent: hello accepted`)},
}

// Milestones lists the first time each boot phase showed on the console, in order.
func (r *Running) Milestones() []Milestone {
	var out []Milestone
	lines := r.Lines()
	for _, m := range milestones {
		for _, l := range lines {
			if loc := m.re.FindStringIndex(l.Text); loc != nil {
				// A console line may carry earlier output without a newline (SeaBIOS's "Probing
				// EDD... ok" before the kernel's banner): show it from the milestone on.
				l.Text = l.Text[loc[0]:]
				out = append(out, Milestone{Name: m.name, Line: l})
				break
			}
		}
	}
	return out
}

// copyFile replaces dst with a copy of src, atomically: imaged may be serving the boot assets it
// replaces.
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, data, 0o644)
}
